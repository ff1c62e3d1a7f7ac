"""Lots for tokens bought before escrow existed (review finding 4).

A holder's tokens of a market that no open lot covers were bought before this deployment: the
gateway serves only from lots, and a sale of them would otherwise be the holder's own escrowed
capacity. For each such holder the uncovered tokens are matched to its trades without a lot,
newest first (FIFO consumption: the oldest purchases went first), each a lot from that trade's
seller at the trade's price, expiring with the seller's capacity (the listing the sell order
came from, else the seller's latest listing in the market, else 30 days from now). Their escrow
is zero: those trades paid the seller at once, so delivery or expiry pays nothing again.
Idempotent: a second run finds the tokens covered.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import migrations
from django.db.models import F, Max, Sum
from django.utils import timezone

DEFAULT_LIFETIME = timedelta(days=30)
TOKENS_PER_MTOK = 1_000_000


def lots_build(apps, schema_editor) -> None:
    Account = apps.get_model("ledger", "Account")
    CapacityListing = apps.get_model("orders", "CapacityListing")
    Lot = apps.get_model("delivery_escrow", "Lot")
    Market = apps.get_model("markets", "Market")
    Order = apps.get_model("orders", "Order")
    Trade = apps.get_model("orders", "Trade")
    now = timezone.now()
    remaining = (
        F("bought_tokens")
        - F("delivered_tokens")
        - F("credited_tokens")
        - F("unconsumed_tokens")
        - F("moved_tokens")
    )
    for market in Market.objects.order_by("id"):
        per_lot = int(market.lot_size * TOKENS_PER_MTOK)
        accounts = Account.objects.filter(asset_id=market.symbol, owner__isnull=False).order_by(
            "owner_id"
        )
        for holder_id, available, held in accounts.values_list("owner_id", "available", "held"):
            covered = (
                Lot.objects.filter(
                    holder_id=holder_id, market=market, closed_at__isnull=True
                ).aggregate(total=Sum(remaining))["total"]
                or 0
            )
            gap = available + held - covered
            if gap <= 0:
                continue
            trades = (
                Trade.objects.filter(market=market, buyer_id=holder_id)
                .exclude(id__in=Lot.objects.filter(trade__isnull=False).values("trade_id"))
                .order_by("-id")
            )
            for trade in trades.iterator():
                tokens = min(trade.quantity_lots * per_lot, gap)
                sell_id = (
                    trade.taker_order_id if trade.taker_side == "sell" else trade.maker_order_id
                )
                listing_id = Order.objects.filter(id=sell_id).values_list(
                    "capacity_listing_id", flat=True
                )[0]
                expires = None
                if listing_id is not None:
                    expires = CapacityListing.objects.filter(id=listing_id).values_list(
                        "available_until", flat=True
                    )[0]
                if expires is None:
                    expires = CapacityListing.objects.filter(
                        provider_id=trade.seller_id, market=market
                    ).aggregate(end=Max("available_until"))["end"]
                Lot.objects.create(
                    holder_id=holder_id,
                    market=market,
                    provider_id=trade.seller_id,
                    trade=trade,
                    price_ticks=trade.price_ticks,
                    seller_fee_rate=0,
                    expires_at=expires or now + DEFAULT_LIFETIME,
                    bought_tokens=tokens,
                    escrow_units=0,
                    created_at=trade.created_at,
                )
                gap -= tokens
                if gap == 0:
                    break


class Migration(migrations.Migration):
    dependencies = [
        ("delivery_escrow", "0003_fewer_indexes"),
        ("ledger", "0006_escrow_nonnegative"),
        ("orders", "0005_command_autovacuum"),
    ]

    operations = [migrations.RunPython(lots_build, migrations.RunPython.noop, elidable=True)]
