"""Demo users for the live demo: providers with capacity, buyers with money, bots, one login.

Idempotent: users, funding (by idempotency key) and listings are created once; running it again
only tops up what the bots have spent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.models import Profile, Role, User
from accounts.services import user_create
from exchange.delivery.endpoints.demo import demo_endpoints_register
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger import services as ledger
from exchange.markets.currencies import CURRENCY_DECIMALS, TOKENS_PER_MTOK
from exchange.markets.models import Market, MarketStatus
from orders.capacity import capacity_list
from orders.models import CapacityListing, ListingStatus

logger = logging.getLogger(__name__)

DEMO_DOMAIN = "demo.tokenexchange.invalid"
DEMO_LOGIN_EMAIL = f"trader@{DEMO_DOMAIN}"
DEMO_LOGIN_PASSWORD = "demo-trader-2026"  # noqa: S105 - shown on the home page on purpose
STAFF_EMAIL = f"demo-staff@{DEMO_DOMAIN}"

# Reference prices per MTok for the demo markets: the simulator's price reverts to them, and its
# bots never trade further from them than the market's price band.
REFERENCE_PRICES = {
    "QWEN3.6-PLUS-OUT-CNY": Decimal("8.00"),
    "QWEN3.6-PLUS-IN-CNY": Decimal("2.00"),
    "DEEPSEEK-V3.2-OUT-CNY": Decimal("3.00"),
    "KIMI-K2-OUT-CNY": Decimal("16.00"),
    "GLM-4.6-OUT-CNY": Decimal("14.00"),
    "LLAMA-4-MAVERICK-OUT-USD": Decimal("0.800"),
    "DEEPSEEK-V3.2-IN-CNY": Decimal("2.00"),
    "KIMI-K2-IN-CNY": Decimal("4.00"),
    "GLM-4.6-IN-CNY": Decimal("4.00"),
    "LLAMA-4-MAVERICK-IN-USD": Decimal("0.200"),
}
DEFAULT_PRICE = Decimal("10.00")
CASH = 2_000_000  # currency units each bot starts with (and is topped up to)
CAPACITY_MTOK = Decimal("100000")  # each provider bot lists this much per market
LISTING_DAYS = 30


@dataclass(frozen=True)
class DemoUser:
    email: str
    role: str
    name: str


PROVIDERS = [
    DemoUser(f"alpha-cloud@{DEMO_DOMAIN}", Role.BOTH, "Alpha Cloud (demo)"),
    DemoUser(f"beta-inference@{DEMO_DOMAIN}", Role.BOTH, "Beta Inference (demo)"),
    DemoUser(f"gamma-gpu@{DEMO_DOMAIN}", Role.BOTH, "Gamma GPU (demo)"),
]
BUYERS = [
    DemoUser(f"agent-builder-{i}@{DEMO_DOMAIN}", Role.BUYER, f"Agent builder {i} (demo)")
    for i in range(1, 6)
]


def reference_price(market: Market) -> Decimal:
    return REFERENCE_PRICES.get(market.symbol, DEFAULT_PRICE)


def _user(spec: DemoUser, password: str | None = None) -> User:
    user = User.objects.filter(email=spec.email).first()
    if user is None:
        user = user_create(
            email=spec.email,
            password=None,
            role=spec.role,
            display_name=spec.name,
            provider_grant_reason="Demo data (demo_seed).",  # demo accounts only
        )
        if password is not None:
            user.set_password(password)
            user.save(update_fields=["password"])
    return user


def demo_staff_get() -> User:
    """The staff user the demo's ledger adjustments are posted by (created once)."""
    staff = User.objects.filter(email=STAFF_EMAIL).first()
    if staff is None:
        staff = User.objects.create_user(email=STAFF_EMAIL, password=None, is_staff=True)
    return staff


def cash_top_up(*, user: User, staff: User, currency: str, target: int) -> None:
    """Bring the user's available cash up to ``target`` currency units (a staff adjustment)."""
    units = target * 10 ** CURRENCY_DECIMALS[currency]
    available = ledger_selectors.balance_get(user=user, asset=currency).available
    if available >= units // 2:
        return
    total = ledger_selectors.balance_get(user=user, asset=currency).total
    ledger.adjustment_post(
        user=user,
        asset=currency,
        amount=units - available,
        reason="Demo data: simulated funding of a demo account.",
        staff_user=staff,
        idempotency_key=f"demo:fund:{user.pk}:{currency}:{total}:{available}",
    )


def capacity_top_up(*, user: User, market: Market) -> None:
    """Keep one live capacity listing per demo provider and market, with tokens left."""
    live = CapacityListing.objects.filter(
        provider=user,
        market=market,
        status=ListingStatus.ACTIVE,
        available_until__gt=timezone.now() + timedelta(days=1),
    ).exists()
    tokens = ledger_selectors.balance_get(user=user, asset=market.symbol).available
    low = tokens < int(CAPACITY_MTOK * TOKENS_PER_MTOK) // 4
    if live and not low:
        return
    capacity_list(
        user=user,
        market=market,
        quantity=str(CAPACITY_MTOK),
        available_until=timezone.now() + timedelta(days=LISTING_DAYS),
    )


def demo_seed() -> dict[str, list[User]]:
    """Create (or top up) the demo accounts. Returns the bot users by role."""
    with transaction.atomic():
        staff = demo_staff_get()
        providers = [_user(spec) for spec in PROVIDERS]
        buyers = [_user(spec) for spec in BUYERS]
        trader = _user(
            DemoUser(DEMO_LOGIN_EMAIL, Role.BOTH, "Demo trader"), password=DEMO_LOGIN_PASSWORD
        )
    markets = list(Market.objects.filter(status=MarketStatus.OPEN))
    currencies = {market.quote_currency for market in markets}
    for user in [*providers, *buyers, trader]:
        for currency in currencies:
            cash_top_up(user=user, staff=staff, currency=currency, target=CASH)
    for market in markets:
        for user in [*providers, trader]:
            capacity_top_up(user=user, market=market)
    Profile.objects.filter(user__in=providers).update(regions=["cn-east", "cn-north"])
    # Their endpoints on the demo upstream, so bought tokens can be used at once (/v1).
    demo_endpoints_register()
    logger.info("demo accounts ready: %s providers, %s buyers", len(providers), len(buyers))
    return {"providers": providers, "buyers": buyers}
