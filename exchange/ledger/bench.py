"""Settlement throughput: ``python -m exchange.ledger.bench [--trades N] [--batch N]``.

Runs against a throwaway database made from ``DATABASE_URL`` (``<name>_ledger_bench``, created,
migrated and dropped again), so ledger rows, which can never be deleted, do not pile up.
Reports trade settlements per second, one per database transaction and batched through
``trade_settle_many``.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from decimal import Decimal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=20_000, help="batched trades to settle")
    parser.add_argument("--single", type=int, default=2_000, help="one-per-transaction trades")
    parser.add_argument("--batch", type=int, default=500, help="settlements per transaction")
    parser.add_argument("--users", type=int, default=200, help="buyers and as many sellers")
    parser.add_argument("--profile", action="store_true", help="cProfile the batched run")
    arguments = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")
    import django

    django.setup()
    from django.db import connection

    creation = connection.creation
    original = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{original}_ledger_bench"
    test_name = creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        _run(arguments)
    finally:
        creation.destroy_test_db(original, verbosity=0)
    print(f"(database {test_name} dropped)")


def _run(arguments: argparse.Namespace) -> None:
    from django.db import transaction

    from accounts.models import User
    from exchange.ledger.selectors import audit_run
    from exchange.ledger.services import (
        SettlementRequest,
        capacity_issue,
        deposit_credit,
        hold_place,
        trade_settle,
        trade_settle_many,
    )
    from exchange.markets.services import DEMO_MARKETS, market_create

    market = market_create(**DEMO_MARKETS[0])
    total = arguments.trades + arguments.single
    users = arguments.users
    buyers = [User.objects.create_user(f"buyer{i}@bench.example") for i in range(users)]
    sellers = [User.objects.create_user(f"seller{i}@bench.example") for i in range(users)]
    # 1,000 tokens at 0.01..1 CNY/MTok: notionals of 1,000..100,000 ledger units.
    per_user = 3 * (total // users + 10)  # random pairs: room for the unlucky ones
    money, tokens = per_user * 200_000, per_user * 1_000
    for i, (buyer, seller) in enumerate(zip(buyers, sellers, strict=True)):
        deposit_credit(
            user=buyer, currency="CNY", amount=money, reference="bench", idempotency_key=f"d{i}"
        )
        hold_place(
            user=buyer, asset="CNY", amount=money, reference="bench", idempotency_key=f"h{i}"
        )
        capacity_issue(
            user=seller, market=market, tokens=tokens, reference="bench", idempotency_key=f"c{i}"
        )
        hold_place(
            user=seller,
            asset=market.symbol,
            amount=tokens,
            reference="bench",
            idempotency_key=f"t{i}",
        )

    generator = random.Random(7)

    def request(n: int) -> SettlementRequest:
        return SettlementRequest(
            market=market,
            buyer=generator.choice(buyers),
            seller=generator.choice(sellers),
            tokens=1_000,
            notional=1_000 * generator.randint(1, 100),
            buyer_fee_rate=Decimal("0.002"),
            seller_fee_rate=Decimal("0.001"),
            reference=f"trade:{n}",
            idempotency_key=f"trade:{n}",
        )

    single = [request(n) for n in range(arguments.single)]
    started = time.perf_counter()
    for item in single:
        with transaction.atomic(durable=True):
            trade_settle(**item._asdict())
    single_rate = len(single) / (time.perf_counter() - started)

    batched = [request(n) for n in range(arguments.single, total)]
    chunks = [batched[i : i + arguments.batch] for i in range(0, len(batched), arguments.batch)]

    def settle_batches() -> None:
        for chunk in chunks:
            with transaction.atomic(durable=True):
                trade_settle_many(settlements=chunk)

    started = time.perf_counter()
    if arguments.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(settle_batches)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    else:
        settle_batches()
    batched_rate = len(batched) / (time.perf_counter() - started)

    report = audit_run()
    print(f"{users} buyers × {users} sellers, 1 market; 5 postings per trade")
    print(f"one settlement per transaction: {len(single):>7} trades  {single_rate:>9,.0f} trades/s")
    print(
        f"trade_settle_many, {arguments.batch}/txn:  {len(batched):>7} trades  "
        f"{batched_rate:>9,.0f} trades/s"
    )
    print(report.render().splitlines()[0])


if __name__ == "__main__":
    main()
