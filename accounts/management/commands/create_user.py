from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Role
from accounts.services import user_create
from exchange.errors import ExchangeError


class Command(BaseCommand):
    help = "Create a user with a profile role. Without --password the user cannot log in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--role", choices=Role.values, default=Role.BUYER)
        parser.add_argument("--password", default=None)
        parser.add_argument("--display-name", default="")
        parser.add_argument("--regions", default="", help="Comma-separated region codes.")
        parser.add_argument("--staff", action="store_true", help="Allow the admin site.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = user_create(
                email=options["email"],
                password=options["password"],
                role=options["role"],
                display_name=options["display_name"],
                regions=options["regions"].split(","),
                # an operator runs this: a provider role needs no application
                provider_grant_reason="Created by an operator (manage.py create_user).",
            )
        except ExchangeError as error:
            raise CommandError(error.message) from error
        if options["staff"]:
            user.is_staff = True
            user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
        self.stdout.write(f"created user {user.email} ({options['role']})")
