from typing import Any

from django.core.management.base import BaseCommand, CommandError

from exchange.ledger.selectors import audit_run


class Command(BaseCommand):
    help = (
        "Recompute every balance from the postings; check that each transaction and each asset "
        "sums to zero and that no user balance is negative; that each escrow account equals its "
        "lots' outstanding escrow and every lot keeps its token identity with no negative "
        "escrow. Exits non-zero on any mismatch."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_run()
        if not report.is_ok:
            raise CommandError(report.render(), returncode=2)
        self.stdout.write(report.render())
