import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.errors import ExchangeError
from exchange.ledger.services import adjustment_post
from exchange.ledger.units import amount_display, amount_parse, is_currency


class Command(BaseCommand):
    help = (
        "Post a staff adjustment to a user's available balance (how demo and test accounts are "
        "funded when Stripe is off). AMOUNT is signed, in currency units for a currency "
        "(100.50 CNY) and in whole tokens for a market's token asset (5000000)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("asset", help='"CNY", "USD", or a market symbol for its tokens.')
        parser.add_argument("amount", help="Signed decimal: currency units, or whole tokens.")
        parser.add_argument("--reason", required=True, help="Why (mandatory, kept forever).")
        parser.add_argument("--staff", help="Email of the staff member responsible.")
        parser.add_argument(
            "--idempotency-key", help="Repeat a key to make a retry safe (default: a new one)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model().objects
        try:
            user = users.get(email=options["email"].strip().lower())
        except users.model.DoesNotExist as error:
            raise CommandError(f"No user with email {options['email']!r}.") from error
        staff_user = None
        if options["staff"]:
            try:
                staff_user = users.get(email=options["staff"].strip().lower())
            except users.model.DoesNotExist as error:
                raise CommandError(f"No staff user with email {options['staff']!r}.") from error
        asset = options["asset"]
        key = options["idempotency_key"] or f"adjust:{uuid.uuid4()}"
        try:
            amount = amount_parse(asset, options["amount"])
            posted = adjustment_post(
                user=user,
                asset=asset,
                amount=amount,
                reason=options["reason"],
                staff_user=staff_user,
                idempotency_key=key,
            )
        except ExchangeError as error:
            raise CommandError(error.message) from error
        shown = amount_display(asset, amount) if is_currency(asset) else f"{amount} tokens"
        self.stdout.write(f"adjustment #{posted.pk}: {shown} {asset} to {user.email} (key {key})")
