"""System checks: endpoint keys at rest need DELIVERY_ENCRYPTION_KEYS outside development."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def encryption_keys_check(app_configs: Any, **kwargs: Any) -> list[Error]:
    from exchange.delivery.endpoints.crypto import cipher

    if not settings.DEBUG and not settings.DELIVERY_ENCRYPTION_KEYS:
        return [
            Error(
                "DELIVERY_ENCRYPTION_KEYS is not set: providers' endpoint keys cannot be stored.",
                hint="Set it to one or more comma-separated Fernet keys, newest first.",
                id="delivery_endpoints.E001",
            )
        ]
    try:
        cipher()
    except Exception as error:
        return [Error(str(error), id="delivery_endpoints.E002")]
    return []
