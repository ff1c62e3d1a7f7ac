from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import api_key_create

pytestmark = pytest.mark.django_db


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_key_create_use_revoke_then_401(make_user) -> None:
    user = make_user()
    session = APIClient()
    session.force_login(user)
    created = session.post(
        "/api/v1/api-keys", {"name": "bot", "scopes": ["read", "trade", "keys"]}, format="json"
    )
    assert created.status_code == 201
    secret = created.json()["key"]
    assert secret.startswith("tx_")

    listed = bearer(secret).get("/api/v1/api-keys")
    assert listed.status_code == 200
    assert [k["prefix"] for k in listed.json()] == [created.json()["prefix"]]
    assert "key" not in listed.json()[0]
    assert "hashed_key" not in listed.json()[0]

    revoked = bearer(secret).delete(f"/api/v1/api-keys/{created.json()['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"

    after = bearer(secret).get("/api/v1/api-keys")
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "authentication_failed"


def test_unknown_and_malformed_keys_get_401_json(make_user) -> None:
    make_user()
    for header in ("Bearer tx_nothere_abc", "Bearer garbage", "Bearer a b"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        response = client.get("/api/v1/api-keys")
        assert response.status_code == 401, header
        assert response.json()["error"]["code"] == "authentication_failed"
    anonymous = APIClient().get("/api/v1/api-keys")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"


def test_wrong_secret_with_a_real_prefix_is_refused(make_user) -> None:
    created = api_key_create(user=make_user(), name="bot", scopes=["read"])
    prefix = created.api_key.prefix
    forged = f"tx_{prefix}_{'A' * 43}"
    assert bearer(forged).get("/api/v1/api-keys").status_code == 401


def test_expired_key_gets_401(make_user) -> None:
    created = api_key_create(
        user=make_user(),
        name="bot",
        scopes=["read", "keys"],
        expires_at=timezone.now() + timedelta(seconds=30),
    )
    assert bearer(created.secret).get("/api/v1/api-keys").status_code == 200
    ApiKey.objects.filter(id=created.api_key.id).update(
        expires_at=timezone.now() - timedelta(seconds=1),
        created_at=timezone.now() - timedelta(days=1),
    )
    response = bearer(created.secret).get("/api/v1/api-keys")
    assert response.status_code == 401


def test_key_without_scope_gets_403(make_user) -> None:
    created = api_key_create(user=make_user(), name="reader", scopes=["trade"])
    response = bearer(created.secret).get("/api/v1/api-keys")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert "keys" in response.json()["error"]["message"]


def test_a_key_cannot_mint_a_key_with_more_scopes(make_user) -> None:
    created = api_key_create(user=make_user(), name="manager", scopes=["read", "keys"])
    response = bearer(created.secret).post(
        "/api/v1/api-keys", {"name": "escalate", "scopes": ["read", "withdraw"]}, format="json"
    )
    assert response.status_code == 400
    assert ApiKey.objects.count() == 1


def test_secret_is_stored_only_as_a_hash(make_user) -> None:
    created = api_key_create(user=make_user(), name="bot", scopes=["read"])
    secret_part = created.secret.split("_", 2)[2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apikey")
        rows = cursor.fetchall()
    dump = repr(rows)
    assert created.secret not in dump
    assert secret_part not in dump
    assert len(created.api_key.hashed_key) == 64


def test_cannot_revoke_another_users_key(make_user) -> None:
    owner_key = api_key_create(user=make_user(), name="owner", scopes=["read"])
    other_key = api_key_create(user=make_user(), name="other", scopes=["read", "keys"])
    response = bearer(other_key.secret).delete(f"/api/v1/api-keys/{owner_key.api_key.id}")
    assert response.status_code == 404
    assert ApiKey.objects.get(id=owner_key.api_key.id).revoked_at is None


def test_web_page_creates_shows_once_and_revokes(client, make_user) -> None:
    user = make_user()
    client.force_login(user)
    page = client.post(reverse("accounts:api_keys"), {"name": "web", "scopes": ["read", "trade"]})
    assert page.status_code == 200
    key = ApiKey.objects.get(user=user)
    body = page.content.decode()
    assert f"tx_{key.prefix}_" in body
    again = client.get(reverse("accounts:api_keys")).content.decode()
    secret_start = body.split(f"tx_{key.prefix}_")[1][:20]
    assert secret_start not in again
    client.post(reverse("accounts:api_key_revoke", args=[key.id]))
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_operator_commands_create_user_and_print_only_the_key() -> None:
    out = StringIO()
    call_command(
        "create_user", "bot@example.com", "--role", "both", "--password", "x-Strong-42!", stdout=out
    )
    key_out = StringIO()
    call_command("create_api_key", "bot@example.com", "--scopes", "read,trade,keys", stdout=key_out)
    secret = key_out.getvalue().strip()
    assert secret.startswith("tx_")
    assert "\n" not in secret
    key = ApiKey.objects.get(user__email="bot@example.com")
    assert key.scopes == ["read", "trade", "keys"]
    assert bearer(secret).get("/api/v1/api-keys").status_code == 200
