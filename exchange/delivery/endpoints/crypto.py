"""Upstream API keys at rest: ``cryptography``'s MultiFernet, keyed from the environment.

``DELIVERY_ENCRYPTION_KEYS`` lists Fernet keys, newest first: the first encrypts, every one
decrypts. Rotation: prepend a new key, deploy, run ``manage.py rotate_endpoint_keys`` (which
re-encrypts every stored key under the first), then drop the old key. With DEBUG on and no keys
set, a key derived from SECRET_KEY is used (development only; settings.py refuses nothing, but
``secret_encrypt`` refuses to run without keys when DEBUG is off).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = ["InvalidToken", "secret_decrypt", "secret_encrypt", "secret_rotate"]


def _development_key(secret_key: str) -> bytes:
    digest = hashlib.sha256(b"delivery-endpoints:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...], secret_key: str, debug: bool) -> MultiFernet:
    if not keys:
        if not debug:
            raise ImproperlyConfigured(
                "DELIVERY_ENCRYPTION_KEYS must be set when DEBUG is off (comma-separated Fernet "
                "keys, newest first)."
            )
        return MultiFernet([Fernet(_development_key(secret_key))])
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            "DELIVERY_ENCRYPTION_KEYS holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes)."
        ) from error


def cipher() -> MultiFernet:
    # Keyed on the settings' values, so a test that overrides them gets a matching cipher.
    return _cipher(
        tuple(settings.DELIVERY_ENCRYPTION_KEYS), settings.SECRET_KEY, bool(settings.DEBUG)
    )


def secret_encrypt(plain: str) -> str:
    return cipher().encrypt(plain.encode()).decode()


def secret_decrypt(token: str) -> str:
    """Raises ``InvalidToken`` if no configured key opens it (a key was dropped too early)."""
    return cipher().decrypt(token.encode()).decode()


def secret_rotate(token: str) -> str:
    """The same secret encrypted under the first (newest) key."""
    return cipher().rotate(token.encode()).decode()
