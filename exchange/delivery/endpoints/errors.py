"""Errors of provider endpoints (all ``ExchangeError``: one API error shape)."""

from __future__ import annotations

from exchange.errors import ExchangeError


class EndpointCheckFailed(ExchangeError):
    """Saving an endpoint: ``GET {base_url}/models`` failed or does not list the model id."""

    code = "endpoint_check_failed"
    http_status = 422


class EndpointUnhealthy(ExchangeError):
    """An ask in a market where the provider has no live endpoint (none, or dead-man tripped)."""

    code = "endpoint_unhealthy"
    http_status = 409


class EndpointExists(ExchangeError):
    code = "endpoint_exists"
    http_status = 409
