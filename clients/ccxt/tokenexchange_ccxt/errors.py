"""Every error code of the token exchange's API and the ccxt exception it raises (the API's
error table: docs/api.md of the exchange)."""

from __future__ import annotations

import ccxt

# Every error code the API answers with, and the ccxt exception it raises.
ERROR_CODES: dict[str, type[Exception]] = {
    # the request itself
    "invalid": ccxt.BadRequest,
    "malformed_request": ccxt.BadRequest,
    "not_found": ccxt.BadRequest,
    "method_not_allowed": ccxt.BadRequest,
    "not_acceptable": ccxt.BadRequest,
    "unsupported_media_type": ccxt.BadRequest,
    "idempotency_conflict": ccxt.BadRequest,
    "invalid_market_configuration": ccxt.BadRequest,
    "invalid_webhook": ccxt.BadRequest,
    "stripe_event_mismatch": ccxt.BadRequest,
    "key_not_found": ccxt.BadRequest,
    "generation_not_found": ccxt.BadRequest,
    "reservation_not_found": ccxt.BadRequest,
    "reservation_closed": ccxt.BadRequest,
    "endpoint_not_found": ccxt.BadRequest,
    "endpoint_exists": ccxt.BadRequest,
    "endpoint_check_failed": ccxt.BadRequest,
    "listing_too_large": ccxt.BadRequest,
    "available_until_too_far": ccxt.BadRequest,
    # who is asking
    "not_authenticated": ccxt.AuthenticationError,
    "authentication_failed": ccxt.AuthenticationError,
    "permission_denied": ccxt.PermissionDenied,
    "provider_not_approved": ccxt.PermissionDenied,
    "payout_account_not_ready": ccxt.AccountNotEnabled,
    # markets and orders
    "market_not_found": ccxt.BadSymbol,
    "market_halted": ccxt.MarketClosed,
    "market_closed": ccxt.MarketClosed,
    "order_not_found": ccxt.OrderNotFound,
    "order_not_open": ccxt.OrderNotFound,  # ccxt's convention for an order already closed
    "duplicate_client_order_id": ccxt.DuplicateOrderId,
    "insufficient_funds": ccxt.InsufficientFunds,
    "insufficient_allocation": ccxt.InsufficientFunds,
    "no_liquidity": ccxt.OrderNotFillable,
    "endpoint_unhealthy": ccxt.InvalidOrder,  # a provider's ask without a working endpoint
    "conflict": ccxt.OperationRejected,
    "capacity_limit_reached": ccxt.OperationRejected,
    "too_many_listings": ccxt.OperationRejected,
    "too_many_api_keys": ccxt.OperationRejected,
    "withdrawal_limit_exceeded": ccxt.OperationRejected,
    "demo_funds_already_granted": ccxt.OperationRejected,
    "demo_funds_unavailable": ccxt.OperationRejected,
    "funding_disabled": ccxt.NotSupported,
    # the exchange's state
    "rate_limited": ccxt.RateLimitExceeded,
    "unavailable": ccxt.RequestTimeout,  # an order with no answer in time: look it up
    "service_unavailable": ccxt.ExchangeNotAvailable,
    "payment_provider_error": ccxt.ExchangeNotAvailable,
    "server_error": ccxt.ExchangeError,
    "error": ccxt.ExchangeError,
}
