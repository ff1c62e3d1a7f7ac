"""Reads of delivery: which markets deliver a model, and a holder's lots.

A *model* is delivered through a PAIR of markets with the same ``model_name``, region and quote
currency: prompt tokens draw on the input market, completion tokens on the output market. Its
public id (what ``/v1/models`` lists and requests name) is a slug of the model name; the region
(and then the quote currency) is appended only when two pairs would otherwise share an id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import F, Q, QuerySet, Sum

from exchange.delivery.escrow.models import Lot
from exchange.markets.models import Market, TokenKind

_NOT_ID = re.compile(r"[^a-z0-9.]+")


@dataclass(frozen=True, slots=True)
class ModelPair:
    model_id: str
    model_name: str
    region: str
    quote_currency: str
    input_market: Market
    output_market: Market

    @property
    def markets(self) -> list[Market]:
        return [self.input_market, self.output_market]


def model_slug(name: str) -> str:
    """``Qwen3.6-Plus`` → ``qwen3.6-plus``; ``Llama 4 Maverick`` → ``llama-4-maverick``."""
    return _NOT_ID.sub("-", name.lower()).strip("-")


def model_pairs() -> list[ModelPair]:
    """Every complete pair, sorted by model id."""
    sides: dict[tuple[str, str, str], dict[str, Market]] = {}
    for market in Market.objects.order_by("symbol"):
        key = (market.model_name, market.region, market.quote_currency)
        # the first market of a kind wins (by symbol): a spec names one market per side
        sides.setdefault(key, {}).setdefault(market.token_kind, market)
    complete = [
        (key, found[TokenKind.INPUT], found[TokenKind.OUTPUT])
        for key, found in sides.items()
        if TokenKind.INPUT in found and TokenKind.OUTPUT in found
    ]
    names: dict[str, int] = {}
    regions: dict[tuple[str, str], int] = {}
    for (name, region, _), _, _ in complete:
        names[model_slug(name)] = names.get(model_slug(name), 0) + 1
        regions[(model_slug(name), region)] = regions.get((model_slug(name), region), 0) + 1
    pairs = []
    for (name, region, currency), input_market, output_market in complete:
        model_id = model_slug(name)
        if names[model_id] > 1:
            if regions[(model_id, region)] > 1:
                model_id = f"{model_id}-{region}-{currency.lower()}"
            else:
                model_id = f"{model_id}-{region}"
        pairs.append(ModelPair(model_id, name, region, currency, input_market, output_market))
    return sorted(pairs, key=lambda pair: pair.model_id)


def model_markets(model_id: str) -> ModelPair | None:
    """The pair serving ``model_id`` (as ``model_pairs`` names it), or None."""
    for pair in model_pairs():
        if pair.model_id == model_id:
            return pair
    return None


def pair_for_market(market: Market) -> ModelPair | None:
    """The complete pair ``market`` belongs to, or None."""
    for pair in model_pairs():
        if market.id in (pair.input_market.id, pair.output_market.id):
            return pair
    return None


def lot_list(*, user: object) -> QuerySet[Lot]:
    """The user's lots, open ones first, earliest expiry first."""
    return (
        Lot.objects.filter(holder=user)
        .select_related("market", "provider")
        .order_by(F("closed_at").asc(nulls_first=True), "expires_at", "id")
    )


@dataclass(frozen=True, slots=True)
class ProviderEscrowSummary:
    """A provider's lots in one market, summed (its dashboard)."""

    market: Market
    sold_tokens: int  # primary sales (lots without a parent)
    delivered_tokens: int
    credited_tokens: int
    unconsumed_tokens: int
    reserved_tokens: int
    escrow_units: int  # still held in escrow for it
    released_units: int  # paid out (gross), of which:
    fee_units: int  # the exchange's seller fee
    credited_units: int  # back to buyers (SLA misses)


def provider_escrow_summary(*, provider: object) -> list[ProviderEscrowSummary]:
    """Per market: what the provider sold, delivered, had credited or left unconsumed, and its
    escrow held, released and credited. Child lots (resales) count their tokens' fate but not a
    second sale."""
    rows = (
        Lot.objects.filter(provider=provider)
        .values("market_id")
        .annotate(
            sold=Sum("bought_tokens", filter=Q(parent__isnull=True)),
            delivered=Sum("delivered_tokens"),
            credited=Sum("credited_tokens"),
            unconsumed=Sum("unconsumed_tokens"),
            reserved=Sum("reserved_tokens"),
            escrow=Sum(
                F("escrow_units") - F("released_units") - F("credited_units") - F("moved_units")
            ),
            released=Sum("released_units"),
            fees=Sum("fee_units"),
            credited_units=Sum("credited_units"),
        )
        .order_by("market_id")
    )
    markets = Market.objects.in_bulk([row["market_id"] for row in rows])
    return [
        ProviderEscrowSummary(
            market=markets[row["market_id"]],
            sold_tokens=row["sold"] or 0,
            delivered_tokens=row["delivered"],
            credited_tokens=row["credited"],
            unconsumed_tokens=row["unconsumed"],
            reserved_tokens=row["reserved"],
            escrow_units=row["escrow"],
            released_units=row["released"],
            fee_units=row["fees"],
            credited_units=row["credited_units"],
        )
        for row in rows
    ]
