"""Our one wrapper around the stripe library: every outgoing Stripe call goes through here.

Every write carries our own ``idempotency_key`` (the library's default key is random per call,
so a retry of ours would make a second object). The library never retries on its own
(``max_network_retries=0``): callers retry with the same key. Errors come back as two kinds:
``StripeDefiniteError`` (Stripe answered and refused: nothing happened) and
``StripeAmbiguousError`` (timeout, connection error, 5xx, 409, 429: it may or may not have
happened, so retry with the same key).

Amounts: Stripe counts minor units (cents, fen); the ledger counts 1e-8. ``to_stripe_amount``
refuses a ledger amount that is not a whole number of minor units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe
from django.conf import settings

from exchange.errors import FundingDisabled, ValidationFailed
from exchange.markets.currencies import CURRENCY_DECIMALS

# Minor-unit decimals Stripe uses for the currencies we quote (both are two-decimal currencies).
STRIPE_DECIMALS: dict[str, int] = {"CNY": 2, "USD": 2}


class StripeGatewayError(Exception):
    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class StripeDefiniteError(StripeGatewayError):
    """Stripe answered and refused the request: nothing was created."""


class StripeAmbiguousError(StripeGatewayError):
    """No definite answer: retry with the same idempotency key."""


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class AccountState:
    id: str
    details_submitted: bool
    payouts_enabled: bool


@dataclass(frozen=True, slots=True)
class BalanceTransaction:
    id: str
    type: str
    amount: int  # ledger units, signed as Stripe signs it (transfers are negative)
    currency: str
    created: int
    source_id: str
    payment_intent: str
    metadata: dict[str, str]


def is_enabled() -> bool:
    return bool(settings.STRIPE_ENABLED and settings.STRIPE_SECRET_KEY)


def to_stripe_amount(currency: str, amount: int) -> int:
    shift = 10 ** (CURRENCY_DECIMALS[currency] - STRIPE_DECIMALS[currency])
    if amount % shift:
        raise ValidationFailed(
            f"{currency} amounts must be a whole number of {currency} minor units.",
            details={"amount": str(amount)},
        )
    return amount // shift


def from_stripe_amount(currency: str, amount: int) -> int:
    return amount * 10 ** (CURRENCY_DECIMALS[currency] - STRIPE_DECIMALS[currency])


def _client() -> stripe.StripeClient:
    if not is_enabled():
        raise FundingDisabled("Stripe is not configured: funding is off.")
    timeout = settings.STRIPE_TIMEOUT_SECONDS
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        # stripe.api_base: the real API unless tests point it at their fake server.
        base_addresses={"api": stripe.api_base, "connect": stripe.connect_api_base},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=(min(timeout, 5.0), timeout)),
    )


def _call(method: Any, params: dict[str, Any], idempotency_key: str | None) -> Any:
    options: dict[str, Any] = {}
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    try:
        return method(params=params, options=options)
    except stripe.APIConnectionError as error:
        raise StripeAmbiguousError(f"Stripe unreachable: {error.user_message or error}") from error
    except (stripe.RateLimitError, stripe.IdempotencyError) as error:
        raise StripeAmbiguousError(str(error.user_message or error), code=error.code or "") from (
            error
        )
    except stripe.StripeError as error:
        status = error.http_status or 0
        message = str(error.user_message or error)
        # 409: a request with this key is still in flight at Stripe; 5xx: outcome unknown.
        if status >= 500 or status in (0, 409):
            raise StripeAmbiguousError(message, code=error.code or "") from error
        raise StripeDefiniteError(message, code=error.code or "") from error


def checkout_session_create(
    *,
    deposit_id: int,
    user_id: int,
    email: str,
    currency: str,
    amount: int,
    success_url: str,
    cancel_url: str,
    idempotency_key: str,
) -> CheckoutSession:
    metadata = {"deposit_id": str(deposit_id), "user_id": str(user_id)}
    params = {
        "mode": "payment",
        "client_reference_id": str(deposit_id),
        "customer_email": email,
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": currency.lower(),
                    "unit_amount": to_stripe_amount(currency, amount),
                    "product_data": {"name": f"Token Exchange deposit ({currency})"},
                },
            }
        ],
        "metadata": metadata,
        # Copied onto the PaymentIntent so that refunds and disputes find the deposit.
        "payment_intent_data": {"metadata": metadata},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    client = _client()
    session = _call(client.v1.checkout.sessions.create, params, idempotency_key)
    return CheckoutSession(id=session.id, url=session.url)


def connected_account_create(*, user_id: int, email: str, idempotency_key: str) -> AccountState:
    params: dict[str, Any] = {
        "type": "express",
        "email": email,
        "metadata": {"user_id": str(user_id)},
        "capabilities": {"transfers": {"requested": True}},
    }
    if settings.STRIPE_CONNECT_COUNTRY:
        params["country"] = settings.STRIPE_CONNECT_COUNTRY
    account = _call(_client().v1.accounts.create, params, idempotency_key)
    return _account_state(account)


def connected_account_retrieve(*, account_id: str) -> AccountState:
    client = _client()
    try:
        account = client.v1.accounts.retrieve(account_id, options={})
    except stripe.StripeError as error:
        raise StripeAmbiguousError(str(error.user_message or error)) from error
    return _account_state(account)


def _account_state(resource: Any) -> AccountState:
    account = resource.to_dict()
    return AccountState(
        id=account["id"],
        details_submitted=bool(account.get("details_submitted")),
        payouts_enabled=bool(account.get("payouts_enabled")),
    )


def account_link_create(
    *, account_id: str, refresh_url: str, return_url: str, idempotency_key: str
) -> str:
    params = {
        "account": account_id,
        "type": "account_onboarding",
        "refresh_url": refresh_url,
        "return_url": return_url,
    }
    link = _call(_client().v1.account_links.create, params, idempotency_key)
    return link.url


def transfer_create(
    *,
    withdrawal_id: int,
    destination: str,
    currency: str,
    amount: int,
    idempotency_key: str,
) -> Transfer:
    params = {
        "amount": to_stripe_amount(currency, amount),
        "currency": currency.lower(),
        "destination": destination,
        "transfer_group": f"withdrawal-{withdrawal_id}",
        "metadata": {"withdrawal_id": str(withdrawal_id)},
    }
    transfer = _call(_client().v1.transfers.create, params, idempotency_key)
    return Transfer(
        id=transfer.id,
        amount=from_stripe_amount(currency, transfer.amount),
        currency=transfer.currency.upper(),
    )


def balance_transaction_list(*, created_from: int, created_until: int) -> list[BalanceTransaction]:
    """Stripe's balance transactions created in [from, until) (Unix seconds), sources expanded."""
    client = _client()
    params = {
        "created": {"gte": created_from, "lt": created_until},
        "limit": 100,
        "expand": ["data.source"],
    }
    try:
        page = client.v1.balance_transactions.list(params=params, options={})
        rows = list(page.auto_paging_iter())
    except stripe.StripeError as error:
        raise StripeAmbiguousError(str(error.user_message or error)) from error
    result = []
    for resource in rows:
        row = resource.to_dict()
        currency = row["currency"].upper()
        if currency not in STRIPE_DECIMALS:
            continue
        source = row.get("source")
        if isinstance(source, str) or source is None:
            source_id, payment_intent, metadata = source or "", "", {}
        else:
            source_id = source.get("id", "")
            payment_intent = source.get("payment_intent") or ""
            metadata = dict(source.get("metadata") or {})
        result.append(
            BalanceTransaction(
                id=row["id"],
                type=row["type"],
                amount=from_stripe_amount(currency, row["amount"]),
                currency=currency,
                created=row["created"],
                source_id=source_id,
                payment_intent=payment_intent if isinstance(payment_intent, str) else "",
                metadata={str(k): str(v) for k, v in metadata.items()},
            )
        )
    return result
