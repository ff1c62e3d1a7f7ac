"""Upstream keys at rest: MultiFernet round trip, rotation by prepending a key, the
development key, and refusal without keys in production."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from exchange.delivery.endpoints.crypto import (
    InvalidToken,
    secret_decrypt,
    secret_encrypt,
    secret_rotate,
)
from exchange.delivery.endpoints.models import Endpoint
from exchange.delivery.endpoints.selectors import endpoint_for
from tests.delivery.endpoints.helpers import live_endpoint

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


def test_round_trip_and_the_ciphertext_hides_the_key(settings) -> None:
    settings.DELIVERY_ENCRYPTION_KEYS = [OLD]
    token = secret_encrypt("sk-live-abcdef")
    assert "sk-live-abcdef" not in token
    assert secret_encrypt("sk-live-abcdef") != token  # random IV: equal keys look different
    assert secret_decrypt(token) == "sk-live-abcdef"
    assert Fernet(OLD.encode()).decrypt(token.encode()) == b"sk-live-abcdef"


def test_first_key_encrypts_every_key_decrypts(settings) -> None:
    settings.DELIVERY_ENCRYPTION_KEYS = [OLD]
    old_token = secret_encrypt("sk-1")
    settings.DELIVERY_ENCRYPTION_KEYS = [NEW, OLD]
    new_token = secret_encrypt("sk-2")
    assert secret_decrypt(old_token) == "sk-1"
    assert Fernet(NEW.encode()).decrypt(new_token.encode()) == b"sk-2"
    with pytest.raises(InvalidToken):
        Fernet(OLD.encode()).decrypt(new_token.encode())
    rotated = secret_rotate(old_token)
    settings.DELIVERY_ENCRYPTION_KEYS = [NEW]
    assert secret_decrypt(rotated) == "sk-1"
    with pytest.raises(InvalidToken):
        secret_decrypt(old_token)


@pytest.mark.django_db
def test_rotate_command_re_encrypts_every_endpoint_under_the_new_key(
    settings, make_user, market, input_market
) -> None:
    settings.DELIVERY_ENCRYPTION_KEYS = [OLD]
    provider = make_user(role="provider")
    endpoints = [live_endpoint(provider, market), live_endpoint(provider, input_market)]
    before = {e.id: e.api_key_ciphertext for e in endpoints}

    settings.DELIVERY_ENCRYPTION_KEYS = [NEW, OLD]
    out = io.StringIO()
    call_command("rotate_endpoint_keys", stdout=out)

    assert "Re-encrypted 2 endpoint key(s)" in out.getvalue()
    settings.DELIVERY_ENCRYPTION_KEYS = [NEW]  # the old key dropped
    for endpoint in Endpoint.objects.all():
        assert endpoint.api_key_ciphertext != before[endpoint.id]
        assert secret_decrypt(endpoint.api_key_ciphertext) == "sk-test-not-a-real-key"
    upstream = endpoint_for(provider_id=provider.id, markets=[input_market, market])
    assert upstream is not None
    assert upstream.api_key == "sk-test-not-a-real-key"


@pytest.mark.django_db
def test_rotate_command_fails_clearly_when_a_key_was_dropped_too_early(
    settings, make_user, market
) -> None:
    settings.DELIVERY_ENCRYPTION_KEYS = [OLD]
    endpoint = live_endpoint(make_user(role="provider"), market)
    settings.DELIVERY_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(Exception, match="put the old key back"):
        call_command("rotate_endpoint_keys", stdout=io.StringIO())
    endpoint.refresh_from_db()
    settings.DELIVERY_ENCRYPTION_KEYS = [OLD]
    assert secret_decrypt(endpoint.api_key_ciphertext) == "sk-test-not-a-real-key"


def test_debug_without_keys_uses_a_key_derived_from_the_secret_key(settings) -> None:
    settings.DELIVERY_ENCRYPTION_KEYS = []
    settings.DEBUG = True
    settings.SECRET_KEY = "dev-secret-one"
    token = secret_encrypt("sk-dev")
    assert secret_decrypt(token) == "sk-dev"
    settings.SECRET_KEY = "dev-secret-two"
    with pytest.raises(InvalidToken):
        secret_decrypt(token)


def test_without_keys_and_debug_off_nothing_is_encrypted(settings) -> None:
    settings.DELIVERY_ENCRYPTION_KEYS = []
    settings.DEBUG = False
    with pytest.raises(ImproperlyConfigured, match="DELIVERY_ENCRYPTION_KEYS must be set"):
        secret_encrypt("sk-prod")


def test_a_malformed_key_is_refused(settings) -> None:
    settings.DELIVERY_ENCRYPTION_KEYS = ["not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="not a Fernet key"):
        secret_encrypt("sk")


def test_the_upstream_repr_never_shows_the_key() -> None:
    from exchange.delivery.endpoints.selectors import Upstream

    upstream = Upstream(1, 2, "http://x/v1", "sk-very-secret", "m", 4)
    assert "sk-very-secret" not in repr(upstream)
    assert "sk-very-secret" not in str(upstream)


def test_check_deploy_requires_the_encryption_keys() -> None:
    from tests.test_settings import PRODUCTION_ENV, run_manage

    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DELIVERY_ENCRYPTION_KEYS"}
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "delivery_endpoints.E001" in result.stdout + result.stderr
    bad = {**PRODUCTION_ENV, "DELIVERY_ENCRYPTION_KEYS": "not-a-key"}
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=bad)
    assert "delivery_endpoints.E002" in result.stdout + result.stderr
