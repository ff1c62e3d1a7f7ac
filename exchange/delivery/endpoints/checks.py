"""System checks: endpoint keys at rest need DELIVERY_ENCRYPTION_KEYS outside development, and
providers' upstreams must not reach private addresses in production."""

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


@register(Tags.security, deploy=True)
def upstream_private_check(app_configs: Any, **kwargs: Any) -> list[Error]:
    if not settings.DEBUG and settings.DELIVERY_UPSTREAM_ALLOW_PRIVATE:
        return [
            Error(
                "DELIVERY_UPSTREAM_ALLOW_PRIVATE is on: providers' endpoints may point the "
                "exchange at plain http and at loopback, private and link-local addresses "
                "(server-side request forgery).",
                hint=(
                    "Set DELIVERY_UPSTREAM_ALLOW_PRIVATE=false (it defaults to on with DEBUG or "
                    "DEMO): development, demo and test setting only."
                ),
                id="delivery_endpoints.E003",
            )
        ]
    return []
