"""Who is asking the gateway: an API key with scope ``consume`` (``Authorization: Bearer``), or
a signed-in browser session (the playground), CSRF-checked as Django checks a form post.

Runs in the gateway's worker thread (database reads), never on the event loop.
"""

from __future__ import annotations

import io
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.middleware.csrf import CsrfViewMiddleware

from accounts.models import ApiKey, Scope
from accounts.services import api_key_authenticate
from exchange.delivery.gateway.protocol import GatewayError

# As the order fast path: a key is looked up once per API_KEY_CACHE_SECONDS per process, so a
# revoked or expired key keeps working here for at most that long (it saves a query a request).
KEY_CACHE_LIMIT = 10_000
_keys: dict[str, tuple[float, ApiKey]] = {}


def _unused(request: Any) -> None:  # the middlewares below are used for their checks only
    return None


def key_principal(authorization: bytes) -> tuple[Any, ApiKey]:
    """The key's user and key; 401 for a malformed, unknown, expired or revoked key, 403 for a
    key without scope ``consume``."""
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        raise GatewayError(401, "invalid_api_key", "Malformed Authorization header.")
    try:
        secret = parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise GatewayError(401, "invalid_api_key", "Malformed API key.") from None
    cached = _keys.get(secret)
    if cached is not None and cached[0] > time.monotonic():
        api_key = cached[1]
    else:
        api_key = api_key_authenticate(key=secret)
        if len(_keys) >= KEY_CACHE_LIMIT:
            _keys.clear()
        if api_key is not None:
            _keys[secret] = (time.monotonic() + settings.API_KEY_CACHE_SECONDS, api_key)
    if api_key is None:
        raise GatewayError(401, "invalid_api_key", "Invalid, expired or revoked API key.")
    if Scope.CONSUME.value not in api_key.scopes:
        raise GatewayError(
            403,
            "insufficient_scope",
            "This API key lacks the 'consume' scope (create one with it at /accounts/api-keys/).",
        )
    return api_key.user, api_key


def session_principal(scope: dict[str, Any], body: bytes) -> Any:
    """The signed-in user of a browser request, after Django's CSRF check."""
    request = ASGIRequest(scope, io.BytesIO(body))
    SessionMiddleware(_unused).process_request(request)
    user = get_user(request)  # type: ignore[arg-type]
    if not user.is_authenticated:
        raise GatewayError(
            401,
            "missing_api_key",
            "Send an API key with scope 'consume' as 'Authorization: Bearer <key>'.",
        )
    request.user = user
    csrf = CsrfViewMiddleware(_unused)
    try:
        csrf.process_request(request)
        refused = csrf.process_view(request, _unused, (), {})
    except DisallowedHost:
        raise GatewayError(400, "invalid_host", "Host not allowed.") from None
    if refused is not None:
        raise GatewayError(403, "csrf_failed", "CSRF check failed: send the X-CSRFToken header.")
    return user
