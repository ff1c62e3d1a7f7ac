"""Run the demo market simulator: bots trading through the order services, for load and demos."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Seed demo accounts (idempotent) and run bots that quote and trade around each market's "
        "reference price, inside its price band. Orders go through the normal services and the "
        "engine runner."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bots", type=int, default=6, help="number of bots (default 6)")
        parser.add_argument(
            "--rate",
            type=float,
            default=4.0,
            help="rounds per second over all markets (a round: a taker order, then the makers' "
            "quotes refreshed; default 4)",
        )
        parser.add_argument("--markets", default="", help="comma-separated symbols (default all)")
        parser.add_argument(
            "--duration", type=float, default=0, help="stop after this many seconds (0: forever)"
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")
        parser.add_argument(
            "--with-runner",
            action="store_true",
            help="also run the engine runner in this process (when nothing else runs one)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from exchange.demo.simulator import Simulator

        if options["with_runner"]:
            from exchange.runner.loop import RunnerLoop

            loop = RunnerLoop(idle_sleep=0.02)
            threading.Thread(target=loop.run_forever, name="engine-runner", daemon=True).start()
        symbols = [s.strip() for s in options["markets"].split(",") if s.strip()]
        simulator = Simulator(
            bots=options["bots"],
            rate=options["rate"],
            symbols=symbols or None,
            seed=options["seed"],
        )
        self.stdout.write(
            f"simulating {len(simulator.bots)} bots at {simulator.rate:g} orders/s on "
            f"{', '.join(s.market.symbol for s in simulator.markets)} (Ctrl-C stops)"
        )
        stop = threading.Event()
        started = time.monotonic()
        try:
            simulator.run(stop=stop, duration=options["duration"] or None)
        except KeyboardInterrupt:
            stop.set()
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"placed {simulator.placed} orders in {elapsed:.1f}s "
            f"({simulator.placed / max(elapsed, 1e-9):.1f}/s), {simulator.failures} refused"
        )
