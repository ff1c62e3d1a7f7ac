"""Demo funds: play money for a new account on a demo exchange, once per account per UTC day.

Only with ``settings.DEMO`` on. The money is a staff ledger adjustment (``adjustment_post``) by
the demo's staff user, with a memo saying it is demo funds, so it is labelled in every statement
and balanced like every other movement. The idempotency key names the user, the UTC day and the
currency: a second grant the same day is refused, and even a retried or concurrent request can
never credit twice (the ledger replays a key instead of posting it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from exchange.errors import Conflict, ExchangeError
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.services import adjustment_post
from exchange.markets.currencies import CURRENCY_DECIMALS
from exchange.markets.models import Market, MarketStatus

# Currency units granted per currency that an open market quotes: enough for a few dozen
# orders of a few MTok on every demo market.
DEMO_FUNDS = {"CNY": 10_000, "USD": 1_500}
MEMO = "Demo funds: play money on a demo exchange, no real value (once per account per UTC day)."


class DemoFundsUnavailable(ExchangeError):
    """This exchange is not a demo (``DEMO`` is off): there is no play money to give."""

    code = "demo_funds_unavailable"
    http_status = 404


class DemoFundsAlreadyGranted(Conflict):
    """The account has had today's demo funds (UTC)."""

    code = "demo_funds_already_granted"
    http_status = 429


@dataclass(frozen=True)
class DemoGrant:
    currency: str
    amount: int  # ledger units


def demo_funds_offer() -> list[DemoGrant]:
    """What one grant gives: ``DEMO_FUNDS`` in each currency an open market quotes."""
    quoted = set(
        Market.objects.filter(status=MarketStatus.OPEN).values_list("quote_currency", flat=True)
    )
    return [
        DemoGrant(currency, units * 10 ** CURRENCY_DECIMALS[currency])
        for currency, units in DEMO_FUNDS.items()
        if currency in quoted
    ]


def _keys(user: User, now: datetime) -> dict[str, str]:
    """The day's idempotency key per currency (looked up exactly: the unique index on the key
    serves equality, not prefixes)."""
    day = now.astimezone(UTC).date().isoformat()
    return {currency: f"demo-funds:{user.pk}:{day}:{currency}" for currency in DEMO_FUNDS}


def demo_funds_granted_today(*, user: User, now: datetime | None = None) -> bool:
    keys = _keys(user, now or timezone.now())
    return LedgerTransaction.objects.filter(idempotency_key__in=keys.values()).exists()


def demo_funds_grant(*, user: User, now: datetime | None = None) -> list[DemoGrant]:
    """Credit today's demo funds to ``user``; ``DemoFundsAlreadyGranted`` if they had them."""
    from exchange.demo.seed import demo_staff_get

    if not settings.DEMO:
        raise DemoFundsUnavailable("This exchange is not a demo: it gives no demo funds.")
    now = now or timezone.now()
    offer = demo_funds_offer()
    if not offer:
        raise DemoFundsUnavailable("No open market to trade with demo funds.")
    staff = demo_staff_get()
    keys = _keys(user, now)
    with transaction.atomic(durable=True):
        # One grant at a time per user: a concurrent second request waits here, then sees the
        # first one's entries and is refused rather than answered as if it had granted.
        User.objects.select_for_update().filter(pk=user.pk).values_list("pk").get()
        if LedgerTransaction.objects.filter(idempotency_key__in=keys.values()).exists():
            raise DemoFundsAlreadyGranted(
                "You have had today's demo funds; more are available tomorrow (UTC)."
            )
        for grant in offer:
            adjustment_post(
                user=user,
                asset=grant.currency,
                amount=grant.amount,
                reason=MEMO,
                staff_user=staff,
                idempotency_key=keys[grant.currency],
            )
    return offer
