from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.markets.models import Market
from orders.journal import journal_lines


class Command(BaseCommand):
    help = (
        "Print a market's processed commands, in journal order, as the engine replay tool's "
        "JSON lines: `export_journal SYM | python -m exchange.engine.replay` reproduces its trades."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol")

    def handle(self, *args: Any, **options: Any) -> None:
        market = Market.objects.filter(symbol=options["symbol"]).first()
        if market is None:
            raise CommandError(f"Unknown market {options['symbol']}.")
        for line in journal_lines(market=market):
            self.stdout.write(line)
