from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import User
from accounts.services import api_key_create
from exchange.errors import ExchangeError


class Command(BaseCommand):
    help = "Create an API key for a user and print only the key on stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument(
            "--scopes", default="read", help="Comma-separated: read,trade,withdraw,consume,keys"
        )
        parser.add_argument("--name", default="cli")
        parser.add_argument("--expires-days", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(email=options["email"].strip().lower()).first()
        if user is None:
            raise CommandError(f"No user with email {options['email']}.")
        expires_at = None
        if options["expires_days"] is not None:
            expires_at = timezone.now() + timedelta(days=options["expires_days"])
        try:
            created = api_key_create(
                user=user,
                name=options["name"],
                scopes=options["scopes"].split(","),
                expires_at=expires_at,
            )
        except ExchangeError as error:
            raise CommandError(error.message) from error
        self.stdout.write(created.secret)
