"""Reads of the gateway: the models a buyer can use now, and generations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from accounts.models import ApiKey
from exchange.delivery.escrow.selectors import model_pairs
from exchange.delivery.escrow.services import holdings_get
from exchange.delivery.gateway.models import Generation
from exchange.errors import GenerationNotFound
from exchange.times import time_text


def models_available(*, user: Any, api_key: ApiKey | None) -> list[dict[str, Any]]:
    """``/v1/models``: the models this buyer holds unexpired allocation of (and the key may
    use), with the markets behind them and what is available."""
    allowed = (
        set(api_key.allowed_models) if api_key is not None and api_key.allowed_models else None
    )
    listed = []
    for pair in model_pairs():
        if allowed is not None and pair.model_id not in allowed:
            continue
        holdings = holdings_get(user=user, pair=pair)
        if not holdings:
            continue
        listed.append(
            {
                "id": pair.model_id,
                "object": "model",
                # OpenAI's format (unix seconds), which the openai client reads
                "created": int(pair.output_market.created_at.timestamp()),
                "owned_by": "token-exchange",
                "name": pair.model_name,
                "region": pair.region,
                "currency": pair.quote_currency,
                "markets": {
                    "input": pair.input_market.symbol,
                    "output": pair.output_market.symbol,
                },
                "available": {
                    "input_tokens": sum(h.input_tokens for h in holdings),
                    "output_tokens": sum(h.output_tokens for h in holdings),
                },
                "providers": len(holdings),
                "earliest_expiry": time_text(min(h.earliest_expiry for h in holdings)),
                "default_max_tokens": pair.output_market.default_max_tokens,
            }
        )
    return listed


def generation_list(*, user: Any, since: datetime | None = None) -> QuerySet[Generation]:
    """The generations a user may see: those they asked for, and those they served as the
    provider (no prompt or completion text exists to show)."""
    generations = Generation.objects.filter(Q(buyer=user) | Q(provider=user)).select_related(
        "input_market", "output_market", "buyer", "provider"
    )
    if since is not None:
        generations = generations.filter(created_at__gte=since)
    return generations


def generation_get(*, user: Any, public_id: str) -> Generation:
    """Another user's generation is "not found", like a missing one."""
    generation = generation_list(user=user).filter(public_id=public_id).first()
    if generation is None:
        raise GenerationNotFound(
            f"No generation {public_id}.", details={"generation_id": public_id}
        )
    return generation
