"""The exception root of the exchange domain.

Services raise these; the API's one exception handler (``exchange.api_errors``) turns them into
the single error shape ``{"error": {"code", "message", "details"}}``. ``code`` is stable English
for programs; the message is for people: services pass lazy text (``gettext_lazy``, with
``format_lazy`` for values), and ``message`` renders it in the language active where it is read
— the web page's language, or the API request's (``Accept-Language``).
"""

from __future__ import annotations

from typing import Any

from django.utils.functional import Promise
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy


class ExchangeError(Exception):
    """Base of every domain error. ``code`` is the stable, machine-readable error code."""

    code = "error"
    http_status = 400
    # An expected refusal (a feature switched off, say): its 5xx is logged at INFO, not ERROR
    # (exchange.logs.ExpectedRefusalsAtInfoFilter). Nothing to alert on.
    expected = False

    def __init__(
        self, message: str | Promise = "", *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message or self.code)
        self.text = message or self.code.replace("_", " ")
        self.details = details or {}

    @property
    def message(self) -> str:
        """The message in the active language (a plain string, safe to serialise)."""
        return str(self.text)


class ValidationFailed(ExchangeError):
    code = "invalid"


class NotFound(ExchangeError):
    """Nothing at this address. Each kind of thing has its own code (``market_not_found``, …)
    so that a client can tell an unknown market from an unknown order without reading text."""

    code = "not_found"
    http_status = 404


class MarketNotFound(NotFound):
    code = "market_not_found"


class OrderNotFound(NotFound):
    code = "order_not_found"


class ApiKeyNotFound(NotFound):
    code = "key_not_found"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class GenerationNotFound(NotFound):
    code = "generation_not_found"


class ReservationNotFound(NotFound):
    code = "reservation_not_found"


class Conflict(ExchangeError):
    code = "conflict"
    http_status = 409


class InsufficientFunds(ExchangeError):
    code = "insufficient_funds"
    http_status = 422


class MarketHalted(ExchangeError):
    code = "market_halted"
    http_status = 409


class InvalidMarketConfiguration(ExchangeError):
    code = "invalid_market_configuration"


class MarketClosed(ExchangeError):
    code = "market_closed"
    http_status = 409


class NoLiquidity(ExchangeError):
    code = "no_liquidity"
    http_status = 422


class DuplicateClientOrderId(Conflict):
    code = "duplicate_client_order_id"


class OrderNotOpen(Conflict):
    code = "order_not_open"


class Forbidden(ExchangeError):
    code = "permission_denied"
    http_status = 403


class IdempotencyConflict(Conflict):
    """An idempotency key was reused with a different request body."""

    code = "idempotency_conflict"

    def __init__(self, key: str) -> None:
        super().__init__(
            format_lazy(
                gettext_lazy("Idempotency key {key} was already used for a different request."),
                key=repr(key),
            ),
            details={"idempotency_key": key},
        )


# --- funding (Stripe) ---------------------------------------------------------------------------
class FundingDisabled(ExchangeError):
    """Stripe is not configured: deposits and withdrawals are off (staff use ledger_adjust)."""

    code = "funding_disabled"
    http_status = 503
    expected = True


class PaymentProviderError(ExchangeError):
    """Stripe refused or could not be reached; nothing was charged or paid."""

    code = "payment_provider_error"
    http_status = 502


class WithdrawalLimitExceeded(ExchangeError):
    code = "withdrawal_limit_exceeded"
    http_status = 422


class PayoutAccountNotReady(Conflict):
    """The provider has no connected Stripe account that can receive transfers yet."""

    code = "payout_account_not_ready"
