from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime

from accounts.funding import services
from accounts.funding.reconciliation import reconcile_run
from accounts.funding.stripe_gateway import StripeGatewayError
from exchange.errors import ExchangeError


def _moment(text: str) -> datetime:
    day = parse_date(text)
    if day is not None:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    moment = parse_datetime(text)
    if moment is None:
        raise CommandError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO date-time.")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Compare credited deposits and paid withdrawals with Stripe's balance transactions "
        "from --since (UTC) until --until (default: now); exits non-zero on any difference."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="YYYY-MM-DD or ISO date-time (UTC).")
        parser.add_argument("--until", help="YYYY-MM-DD or ISO date-time (UTC); default now.")

    def handle(self, *args: Any, **options: Any) -> None:
        since = _moment(options["since"])
        until = _moment(options["until"]) if options["until"] else datetime.now(UTC)
        if until <= since or until - since > timedelta(days=366):
            raise CommandError("--until must be after --since, at most a year later.")
        try:
            services.funding_require_enabled()
            report = reconcile_run(since=since, until=until)
        except (ExchangeError, StripeGatewayError) as error:
            raise CommandError(getattr(error, "message", str(error))) from error
        self.stdout.write(
            f"reconciliation {since.isoformat()} – {until.isoformat()}: {report.matched} matched, "
            f"{len(report.differences)} difference(s)"
        )
        for item in report.differences:
            where = " / ".join(v for k, v in item.items() if k in ("ours", "stripe"))
            self.stdout.write(f"  - {item['kind']}: {where}: {item['detail']}")
        if report.differences:
            raise CommandError(f"{len(report.differences)} difference(s) with Stripe.")
