"""Reads of the delivery pages: the buyer's Use page (playground, lots, snippet) and the delivery
section of the provider dashboard (deliveries, escrow released, credits paid, health).

Only reads, over the delivery apps' models and selectors; money stays integer ledger units
until ``amount_display`` turns it into the currency's decimal text at the edge.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils.translation import pgettext_lazy

from exchange.delivery.endpoints.selectors import endpoint_list, market_provider_stats
from exchange.delivery.escrow.models import Lot
from exchange.delivery.escrow.selectors import ModelPair, model_pairs
from exchange.delivery.gateway.models import Generation, GenerationStatus
from exchange.delivery.gateway.selectors import models_available
from exchange.ledger.units import amount_display
from orders.capacity import allocation_list_json

RECENT_SHOWN = 10
LOTS_SHOWN = 100
# a lot's status (orders.capacity.allocation_list_json): "Open" is also an order's and a market's
LOT_STATUSES = {
    "open": pgettext_lazy("lot status", "Open"),
    "expired": pgettext_lazy("lot status", "Expired"),
    "closed": pgettext_lazy("lot status", "Closed"),
}
GENERATION_STATUSES = {
    GenerationStatus.IN_PROGRESS: pgettext_lazy("generation status", "In progress"),
    GenerationStatus.COMPLETED: pgettext_lazy("generation status", "Completed"),
    GenerationStatus.FAILED: pgettext_lazy("generation status", "Failed"),
    GenerationStatus.BROKEN: pgettext_lazy("generation status", "Broken by the provider"),
    GenerationStatus.CANCELLED: pgettext_lazy("generation status", "Cancelled by the buyer"),
    GenerationStatus.INTERRUPTED: pgettext_lazy("generation status", "Interrupted"),
    GenerationStatus.TIME_LIMITED: pgettext_lazy("generation status", "Stopped at the time limit"),
}


def _zero(expression: Any) -> Coalesce:
    return Coalesce(expression, 0)


# --- buyer: the Use page ------------------------------------------------------------------------
def use_models(*, user: Any) -> list[dict[str, Any]]:
    """The models the buyer can use now, as ``/v1/models`` lists them for the session."""
    return models_available(user=user, api_key=None)


def use_lots(*, user: Any, pairs: list[ModelPair] | None = None) -> list[dict[str, Any]]:
    """The buyer's lots in markets that deliver a model (open first, earliest expiry first),
    each with its model id: delivered / credited / reserved / remaining tokens and expiry."""
    model_of = {
        market.symbol: pair.model_id
        for pair in (model_pairs() if pairs is None else pairs)
        for market in pair.markets
    }
    return [
        {**row, "model": model_of[row["market"]]}
        for row in allocation_list_json(user=user, limit=LOTS_SHOWN)
        if row["market"] in model_of
    ]


# --- provider: the delivery section of the dashboard ---------------------------------------------
def provider_escrow(*, user: Any) -> list[dict[str, Any]]:
    """Per market, the escrow of the lots sold by this provider: tokens delivered, credited,
    retired unconsumed and still to deliver; money released (gross, fee, net), owed but not yet
    released, credited back to buyers and still held.

    A resold lot's tokens and money move to a child lot of the same provider, so summing over
    every lot counts each token and unit once (``moved`` is left out of the sums)."""
    rows = (
        Lot.objects.filter(provider=user)
        .values("market__symbol", "market__quote_currency")
        .annotate(
            lots=Count("id", filter=Q(parent__isnull=True)),
            sum_sold_tokens=_zero(Sum("bought_tokens", filter=Q(parent__isnull=True))),
            sum_delivered_tokens=_zero(Sum("delivered_tokens")),
            sum_credited_tokens=_zero(Sum("credited_tokens")),
            sum_unconsumed_tokens=_zero(Sum("unconsumed_tokens")),
            sum_reserved_tokens=_zero(Sum("reserved_tokens")),
            sum_released_units=_zero(Sum("released_units")),
            sum_fee_units=_zero(Sum("fee_units")),
            sum_earned_units=_zero(Sum("earned_units")),
            sum_credited_units=_zero(Sum("credited_units")),
            sum_held_units=_zero(
                Sum(
                    F("escrow_units") - F("released_units") - F("credited_units") - F("moved_units")
                )
            ),
            sum_to_deliver_tokens=_zero(
                Sum(
                    F("bought_tokens")
                    - F("delivered_tokens")
                    - F("credited_tokens")
                    - F("unconsumed_tokens")
                    - F("moved_tokens"),
                    filter=Q(closed_at__isnull=True),
                )
            ),
        )
        .order_by("market__symbol")
    )
    result = []
    for row in rows:
        currency = row["market__quote_currency"]

        def money(units: int, currency: str = currency) -> str:
            return amount_display(currency, units)

        result.append(
            {
                "market": row["market__symbol"],
                "currency": currency,
                "lots": row["lots"],
                "sold_tokens": row["sum_sold_tokens"],
                "delivered_tokens": row["sum_delivered_tokens"],
                "credited_tokens": row["sum_credited_tokens"],
                "unconsumed_tokens": row["sum_unconsumed_tokens"],
                "reserved_tokens": row["sum_reserved_tokens"],
                "to_deliver_tokens": row["sum_to_deliver_tokens"],
                "released": money(row["sum_released_units"]),
                "fee": money(row["sum_fee_units"]),
                "net_released": money(row["sum_released_units"] - row["sum_fee_units"]),
                "owed": money(row["sum_earned_units"] - row["sum_released_units"]),
                "credited": money(row["sum_credited_units"]),
                "held": money(row["sum_held_units"]),
            }
        )
    return result


def provider_deliveries(*, user: Any) -> list[dict[str, Any]]:
    """Per model, the generations this provider served: requests (completed, broken, SLA
    missed), tokens served from each market, their cost to buyers and the credits paid."""
    served = Generation.objects.filter(provider=user).exclude(status=GenerationStatus.FAILED)
    rows = (
        served.values("model_id", "currency")
        .annotate(
            requests=Count("id"),
            completed=Count("id", filter=Q(status=GenerationStatus.COMPLETED)),
            broken=Count("id", filter=Q(status=GenerationStatus.BROKEN)),
            sla_missed=Count("id", filter=Q(sla_met=False)),
            sum_prompt_tokens=_zero(Sum("prompt_tokens")),
            sum_completion_tokens=_zero(Sum("completion_tokens")),
            cost_units=_zero(Sum(F("input_cost_units") + F("output_cost_units"))),
            sum_credit_units=_zero(Sum("credit_units")),
        )
        .order_by("model_id", "currency")
    )
    return [
        {
            "model": row["model_id"],
            "currency": row["currency"],
            "requests": row["requests"],
            "completed": row["completed"],
            "broken": row["broken"],
            "sla_missed": row["sla_missed"],
            "prompt_tokens": row["sum_prompt_tokens"],
            "completion_tokens": row["sum_completion_tokens"],
            "cost": amount_display(row["currency"], row["cost_units"]),
            "credit": amount_display(row["currency"], row["sum_credit_units"]),
        }
        for row in rows
    ]


def provider_recent_generations(*, user: Any, limit: int = RECENT_SHOWN) -> list[dict[str, Any]]:
    """The last requests routed to this provider (failed attempts included: they cost the buyer
    nothing but count against the provider's uptime)."""
    generations = Generation.objects.filter(provider=user).order_by("-id")[:limit]
    return [
        {
            "id": g.public_id,
            "created_at": g.created_at,
            "model": g.model_id,
            "status": g.status,
            "status_text": GENERATION_STATUSES.get(g.status, g.status),
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens,
            "currency": g.currency,
            "cost": amount_display(g.currency, g.cost_units),
            "credit": amount_display(g.currency, g.credit_units),
            "first_token_ms": g.first_token_ms,
            "output_tokens_per_second": g.output_tokens_per_second,
            "sla_met": g.sla_met,
            "sla_reason": g.sla_reason,
        }
        for g in generations
    ]


def provider_health(*, user: Any) -> list[dict[str, Any]]:
    """Per market this provider has an endpoint in: the endpoint's status and the public
    statistics of this provider there (uptime, time to first token, tokens/s), as buyers see
    them on the trade page."""
    result = []
    for endpoint in endpoint_list(user=user).select_related("market").order_by("market__symbol"):
        stats = next(
            (
                row
                for row in market_provider_stats(market=endpoint.market)
                if row["provider_id"] == user.pk
            ),
            None,
        )
        result.append({"market": endpoint.market.symbol, "endpoint": endpoint, "stats": stats})
    return result


def provider_delivery(*, user: Any) -> dict[str, Any]:
    """Everything the dashboard's delivery section shows."""
    return {
        "escrow": provider_escrow(user=user),
        "deliveries": provider_deliveries(user=user),
        "recent": provider_recent_generations(user=user),
        "health": provider_health(user=user),
    }
