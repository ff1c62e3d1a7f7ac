"""Which providers a request tries, in which order. Pure (the metering contract covers it).

A request is served by ONE provider per attempt, from the lots the buyer holds from that
provider in both markets of the model. By default the provider whose lot expires first goes
first (use the allocation before it is lost); the optional ``provider`` object re-orders or
narrows the list as OpenRouter's does. Attempts that fail before the first token fall through to
the next (unless ``allow_fallbacks`` is false).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from exchange.delivery.gateway.protocol import GatewayError, ProviderPreferences


class Candidate(NamedTuple):
    provider_id: int
    name: str  # the provider's public name (slug), as buyers write it in ``provider``
    expires_at: datetime  # its earliest unexpired lot of this model
    input_tokens: int  # available (unreserved) in the input market
    output_tokens: int  # available in the output market
    price: Decimal | None = None  # weighted input + output price per MTok of its lots
    latency_ms: int | None = None  # public time to first token p50, when known
    throughput: Decimal | None = None  # public output tokens/s p50, when known

    def named(self, names: tuple[str, ...]) -> bool:
        return self.name.lower() in names or str(self.provider_id) in names


def _sort_key(sort: str | None) -> Any:
    if sort == "price":
        return lambda c: (c.price is None, c.price or 0, c.expires_at, c.provider_id)
    if sort == "latency":
        return lambda c: (c.latency_ms is None, c.latency_ms or 0, c.expires_at, c.provider_id)
    if sort == "throughput":
        return lambda c: (c.throughput is None, -(c.throughput or 0), c.expires_at, c.provider_id)
    return lambda c: (c.expires_at, c.provider_id)


def _insufficient(needed: tuple[int, int], candidates: list[Candidate], model: str) -> GatewayError:
    held = (0, 0)
    if candidates:
        best = max(candidates, key=lambda c: (min(c.input_tokens, c.output_tokens), -c.provider_id))
        held = (best.input_tokens, best.output_tokens)
    return GatewayError(
        402,
        "insufficient_allocation",
        f"Not enough allocation for {model}: this request may need {needed[0]} input and "
        f"{needed[1]} output tokens from one provider; the most you hold from one is {held[0]} "
        f"input and {held[1]} output tokens. Buy more, or lower max_tokens.",
        details={
            "needed": {"input_tokens": needed[0], "output_tokens": needed[1]},
            "held": {"input_tokens": held[0], "output_tokens": held[1]},
        },
    )


def route(
    candidates: list[Candidate],
    *,
    healthy: set[int] | frozenset[int],
    preferences: ProviderPreferences,
    needed: tuple[int, int],
    model: str,
) -> list[Candidate]:
    """The providers to try, in order. Raises ``GatewayError``: 402 ``insufficient_allocation``
    when no provider's lots cover the worst case (or there are none), 503
    ``no_provider_available`` when lots exist but no healthy provider the preferences allow
    holds them."""
    holders = [c for c in candidates if c.input_tokens > 0 or c.output_tokens > 0]
    if not holders:
        raise _insufficient(needed, [], model)
    allowed = [
        c
        for c in holders
        if (not preferences.only or c.named(preferences.only)) and not c.named(preferences.ignore)
    ]
    up = [c for c in allowed if c.provider_id in healthy]
    if not up:
        reason = "no healthy provider" if allowed else "no provider your preferences allow"
        raise GatewayError(
            503,
            "no_provider_available",
            f"None of the providers you hold {model} from can serve it now ({reason}); "
            "your allocation is untouched. Retry later.",
            details={"providers_held": sorted(c.name for c in holders)},
            retry_after=5,
        )
    covering = [c for c in up if c.input_tokens >= needed[0] and c.output_tokens >= needed[1]]
    if not covering:
        raise _insufficient(needed, up, model)
    ranked = sorted(covering, key=_sort_key(preferences.sort))
    if preferences.order:
        position = {name: index for index, name in enumerate(preferences.order)}

        def listed(c: Candidate) -> int | None:
            hits = [position[n] for n in (c.name.lower(), str(c.provider_id)) if n in position]
            return min(hits) if hits else None

        first = sorted((c for c in ranked if listed(c) is not None), key=lambda c: listed(c) or 0)
        rest = [c for c in ranked if listed(c) is None]
        ranked = first + rest if preferences.allow_fallbacks else first
        if not ranked:
            raise GatewayError(
                503,
                "no_provider_available",
                f"None of the providers in provider.order can serve {model} now, and "
                "allow_fallbacks is false; your allocation is untouched.",
                retry_after=5,
            )
    elif not preferences.allow_fallbacks:
        ranked = ranked[:1]
    return ranked
