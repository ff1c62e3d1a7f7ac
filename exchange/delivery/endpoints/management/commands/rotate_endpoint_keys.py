"""Re-encrypt every stored upstream API key under the newest DELIVERY_ENCRYPTION_KEYS key.

Rotation: prepend a new key to DELIVERY_ENCRYPTION_KEYS and deploy (every process can then
decrypt old and new), run this command, then drop the old key from the list.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from exchange.delivery.endpoints.crypto import InvalidToken
from exchange.delivery.endpoints.services import endpoint_keys_rotate


class Command(BaseCommand):
    help = "Re-encrypt every endpoint API key under the first DELIVERY_ENCRYPTION_KEYS key."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rotated = endpoint_keys_rotate()
        except InvalidToken as error:
            raise CommandError(
                "A stored key cannot be decrypted with any DELIVERY_ENCRYPTION_KEYS key: put the "
                "old key back in the list (after the new one) and run again."
            ) from error
        self.stdout.write(f"Re-encrypted {rotated} endpoint key(s) under the newest key.")
