"""A ``consume`` key's limits, as its owner set them (``accounts.ApiKey``).

- ``requests_per_minute`` / ``tokens_per_minute``: fixed one-minute windows counted in the
  cache (Redis in production: shared by every gateway process, as DRF's throttles are). A
  request counts when it arrives; its tokens count once settled, so a minute whose tokens
  already reached the limit refuses the next request (429, ``Retry-After`` = the rest of the
  minute). Rate limits, not money controls: a lost Redis forgets a minute, nothing more.
- ``tokens_per_day`` / ``tokens_per_month`` (UTC day, calendar month): budgets from the
  generation rows — finished ones at what they used, running ones at their reserved worst
  case — checked and the new generation written in one transaction holding the key's row lock,
  so concurrent requests of one key can never overrun it together (402).
- ``allowed_models``: model ids the key may use (403).
"""

from __future__ import annotations

from datetime import datetime

from django.core.cache import cache
from django.db.models import Case, F, Sum, When

from accounts.models import ApiKey
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.delivery.gateway.protocol import GatewayError

WINDOW_SECONDS = 60


def _window(now: datetime) -> tuple[int, int]:
    """(this minute's number, seconds until the next one)."""
    epoch = int(now.timestamp())
    return epoch // WINDOW_SECONDS, WINDOW_SECONDS - epoch % WINDOW_SECONDS


def _counter_add(name: str, amount: int) -> int:
    # add() creates the window's key with an expiry only if absent; incr() is atomic in Redis
    cache.add(name, 0, timeout=WINDOW_SECONDS * 2)
    try:
        return int(cache.incr(name, amount))
    except ValueError:  # expired between add() and incr()
        cache.add(name, amount, timeout=WINDOW_SECONDS * 2)
        return amount


def model_check(*, api_key: ApiKey | None, model_id: str) -> None:
    if api_key is not None and api_key.allowed_models and model_id not in api_key.allowed_models:
        raise GatewayError(
            403,
            "model_not_allowed",
            f"This API key may not use {model_id}; it may use: "
            f"{', '.join(api_key.allowed_models)}.",
            param="model",
            details={"limit": "allowed_models", "allowed_models": api_key.allowed_models},
        )


def rate_check(*, api_key: ApiKey | None, now: datetime) -> None:
    """Count this request in its minute; 429 past ``requests_per_minute`` or when the minute's
    tokens reached ``tokens_per_minute``."""
    if api_key is None or not (api_key.requests_per_minute or api_key.tokens_per_minute):
        return
    minute, retry_after = _window(now)
    if api_key.requests_per_minute:
        count = _counter_add(f"gw:rpm:{api_key.pk}:{minute}", 1)
        if count > api_key.requests_per_minute:
            raise GatewayError(
                429,
                "rate_limit_exceeded",
                f"This API key's limit of {api_key.requests_per_minute} requests per minute "
                "is reached.",
                details={"limit": "requests_per_minute", "value": api_key.requests_per_minute},
                retry_after=retry_after,
            )
    if api_key.tokens_per_minute:
        used = int(cache.get(f"gw:tpm:{api_key.pk}:{minute}") or 0)
        if used >= api_key.tokens_per_minute:
            raise GatewayError(
                429,
                "rate_limit_exceeded",
                f"This API key's limit of {api_key.tokens_per_minute} tokens per minute is "
                f"reached ({used} used this minute).",
                details={
                    "limit": "tokens_per_minute",
                    "value": api_key.tokens_per_minute,
                    "used": used,
                },
                retry_after=retry_after,
            )


def tokens_record(*, api_key_id: int | None, tokens: int, now: datetime) -> None:
    """Count a settled request's tokens in the key's minute."""
    if api_key_id is None or tokens <= 0:
        return
    minute, _ = _window(now)
    _counter_add(f"gw:tpm:{api_key_id}:{minute}", tokens)


def _used_since(api_key: ApiKey, start: datetime) -> int:
    total = Generation.objects.filter(api_key=api_key, created_at__gte=start).aggregate(
        tokens=Sum(
            Case(
                When(
                    status=GenerationStatus.IN_PROGRESS,
                    then=F("reserved_input_tokens") + F("reserved_output_tokens"),
                ),
                default=F("prompt_tokens") + F("completion_tokens"),
            )
        )
    )["tokens"]
    return int(total or 0)


def budget_check(*, api_key: ApiKey, tokens: int, now: datetime) -> None:
    """402 when ``tokens`` more would pass the key's daily or monthly budget. Call inside the
    transaction that writes the generation, with the key's row locked (``select_for_update``)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for field, start in (("tokens_per_day", day), ("tokens_per_month", day.replace(day=1))):
        limit = getattr(api_key, field)
        if not limit:
            continue
        used = _used_since(api_key, start)
        if used + tokens > limit:
            period = "day" if field == "tokens_per_day" else "month"
            raise GatewayError(
                402,
                "key_budget_exceeded",
                f"This API key's budget of {limit} tokens per {period} would be exceeded: "
                f"{used} used or reserved, this request may use {tokens}. Lower max_tokens "
                "or wait for the next period.",
                details={"limit": field, "value": limit, "used": used, "requested": tokens},
            )
