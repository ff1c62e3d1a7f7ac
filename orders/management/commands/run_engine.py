import logging
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from exchange.runner.loop import RunnerLoop


class Command(BaseCommand):
    help = (
        "Run the matching engine: the single writer of every market whose advisory lock this "
        "process can take (all markets, or those given with --market). A second runner for the "
        "same market waits and takes over when the first dies."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--market", action="append", dest="markets", default=None)
        parser.add_argument(
            "--idle-sleep",
            type=float,
            default=0.25,
            help="Longest wait between polls; order intake wakes the runner with NOTIFY.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(level=logging.INFO)
        loop = RunnerLoop(options["markets"], idle_sleep=options["idle_sleep"])

        def stop(signum: int, frame: Any) -> None:
            loop.stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        def ready(symbols: list[str]) -> None:
            self.stdout.write(f"engine runner ready: {len(symbols)} market(s) {' '.join(symbols)}")
            self.stdout.flush()

        loop.run_forever(on_ready=ready)
