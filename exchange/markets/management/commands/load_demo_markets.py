from typing import Any

from django.core.management.base import BaseCommand

from exchange.markets.services import demo_markets_load


class Command(BaseCommand):
    help = "Create the demo markets (idempotent: existing markets are left as they are)."

    def handle(self, *args: Any, **options: Any) -> None:
        created, existing = demo_markets_load()
        self.stdout.write(f"demo markets: {created} created, {existing} already present")
