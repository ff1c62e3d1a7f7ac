"""API rate limits: per API key for authenticated callers, per IP address otherwise, with the
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` headers on every answer
and ``Retry-After`` on a 429 (``exchange.api_errors``).

These are DRF's ``SimpleRateThrottle`` (histories in the Redis cache, shared by every process
and by the order fast path, which runs the same throttles). A key holder's public requests
count against its key, not against the address it shares with others. The numbers are a
convenience for clients, not a money control: caps that matter are in the ledger.
"""

from __future__ import annotations

import math
from typing import Any

from rest_framework import throttling
from rest_framework.request import Request

from accounts.models import ApiKey

RATE_LIMIT_ATTRIBUTE = "rate_limit"  # on the Django request: (limit, remaining, reset seconds)


class _Reporting(throttling.SimpleRateThrottle):
    """Remembers, on the request, where its caller stands (for the headers)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        allowed = super().allow_request(request, view)
        if self.rate is not None and getattr(self, "key", None) is not None:
            rate_limit_record(request, self.num_requests, self.history, self.now, self.duration)
        return allowed


def rate_limit_record(
    request: Any, limit: int, history: list[float], now: float, duration: int
) -> None:
    """Store (limit, remaining, seconds until the window has room again) on ``request``; when
    several throttles apply, the tightest one is what the caller sees."""
    remaining = max(limit - len(history), 0)
    reset = math.ceil(duration - (now - history[-1])) if history else 0
    target = getattr(request, "_request", request)
    current = getattr(target, RATE_LIMIT_ATTRIBUTE, None)
    if current is None or remaining < current[1]:
        setattr(target, RATE_LIMIT_ATTRIBUTE, (limit, remaining, max(reset, 0)))


class AnonRateThrottle(_Reporting, throttling.AnonRateThrottle):
    """Callers without credentials, per IP address (``API_THROTTLE_ANON``)."""


class KeyRateThrottle(_Reporting, throttling.UserRateThrottle):
    """Authenticated callers: per API key (each bot its own budget), or per user for a browser
    session (``API_THROTTLE_USER``)."""

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not (request.user and request.user.is_authenticated):
            return None
        auth = getattr(request, "auth", None)
        ident = f"key{auth.pk}" if isinstance(auth, ApiKey) else f"user{request.user.pk}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


def rate_limit_headers(request: Any) -> dict[str, str]:
    """The RateLimit-* headers for what the throttles recorded on ``request`` (none: {})."""
    recorded = getattr(request, RATE_LIMIT_ATTRIBUTE, None)
    if recorded is None:
        return {}
    limit, remaining, reset = recorded
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
    }


def rate_limit_peek(request: Any) -> None:
    """For an answer given before the throttles ran (no credentials, a refused key or scope):
    where the caller stands, read without counting the request."""
    from rest_framework.settings import api_settings

    for throttle_class in api_settings.DEFAULT_THROTTLE_CLASSES:
        throttle = throttle_class()
        if not isinstance(throttle, _Reporting) or throttle.rate is None:
            continue
        key = throttle.get_cache_key(request, None)
        if key is None:
            continue
        now = throttle.timer()
        history = [
            moment for moment in throttle.cache.get(key, []) if moment > now - throttle.duration
        ]
        rate_limit_record(request, throttle.num_requests, history, now, throttle.duration)
