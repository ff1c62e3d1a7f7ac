"""Issue #16, finding 1: managing API keys needs the ``keys`` scope, and a key cannot outlive,
outnumber or outrank the key that made it. Key creation and revocation are audited."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import api_key_create

pytestmark = pytest.mark.django_db


def bearer(key: str, agent: str = "pytest-bot/1.0") -> APIClient:
    client = APIClient(HTTP_USER_AGENT=agent, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_a_read_only_key_cannot_list_create_or_revoke_keys(make_user) -> None:
    user = make_user()
    reader = api_key_create(user=user, name="dashboard", scopes=["read"])
    trader = api_key_create(user=user, name="bot", scopes=["read", "trade"])
    client = bearer(reader.secret)

    listed = client.get("/api/v1/api-keys")
    assert listed.status_code == 403
    assert "keys" in listed.json()["error"]["message"]
    created = client.post("/api/v1/api-keys", {"name": "x", "scopes": ["read"]}, format="json")
    assert created.status_code == 403
    revoked = client.delete(f"/api/v1/api-keys/{trader.api_key.id}")
    assert revoked.status_code == 403
    assert ApiKey.objects.filter(user=user).count() == 2
    assert ApiKey.objects.get(id=trader.api_key.id).revoked_at is None


def test_a_keys_key_can_list_create_and_revoke(make_user) -> None:
    user = make_user()
    manager = api_key_create(user=user, name="manager", scopes=["read", "keys"])
    client = bearer(manager.secret)
    listed = client.get("/api/v1/api-keys")
    assert listed.status_code == 200
    assert [k["scopes"] for k in listed.json()] == [["read", "keys"]]
    created = client.post("/api/v1/api-keys", {"name": "child", "scopes": ["read"]}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["created_by_key"] == manager.api_key.id
    revoked = client.delete(f"/api/v1/api-keys/{created.json()['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"


def test_keys_scope_is_offered_on_the_page(client, make_user) -> None:
    user = make_user()
    client.force_login(user)
    page = client.post(reverse("accounts:api_keys"), {"name": "web", "scopes": ["read", "keys"]})
    assert page.status_code == 200
    assert 'value="keys"' in page.content.decode()
    assert ApiKey.objects.get(user=user).scopes == ["read", "keys"]


def test_a_child_never_expires_after_its_parent(make_user) -> None:
    user = make_user()
    parent_expiry = timezone.now() + timedelta(days=1)
    parent = api_key_create(user=user, name="p", scopes=["read", "keys"], expires_at=parent_expiry)
    client = bearer(parent.secret)
    # no expiry asked for: the child gets the parent's
    clipped = client.post("/api/v1/api-keys", {"name": "c1", "scopes": ["read"]}, format="json")
    assert clipped.status_code == 201
    child = ApiKey.objects.get(id=clipped.json()["id"])
    assert child.expires_at == parent.api_key.expires_at
    # a later expiry asked for: refused, nothing created
    later = client.post(
        "/api/v1/api-keys",
        {"name": "c2", "scopes": ["read"], "expires_at": (parent_expiry + timedelta(days=365))
         .isoformat()},
        format="json",
    )  # fmt: skip
    assert later.status_code == 400
    assert "expire" in later.json()["error"]["message"]
    # an earlier one is kept
    sooner = parent_expiry - timedelta(hours=1)
    earlier = client.post(
        "/api/v1/api-keys",
        {"name": "c3", "scopes": ["read"], "expires_at": sooner.isoformat()},
        format="json",
    )
    assert earlier.status_code == 201
    assert ApiKey.objects.get(id=earlier.json()["id"]).expires_at == sooner
    assert ApiKey.objects.filter(user=user).count() == 3


def test_a_child_is_revoked_with_its_parent(make_user) -> None:
    user = make_user()
    session = APIClient()
    session.force_login(user)
    parent = api_key_create(user=user, name="p", scopes=["read", "keys"])
    child = bearer(parent.secret).post(
        "/api/v1/api-keys", {"name": "c", "scopes": ["read", "keys"]}, format="json"
    )
    grandchild = bearer(child.json()["key"]).post(
        "/api/v1/api-keys", {"name": "g", "scopes": ["read"]}, format="json"
    )
    unrelated = api_key_create(user=user, name="u", scopes=["read"])
    assert session.delete(f"/api/v1/api-keys/{parent.api_key.id}").status_code == 200
    for key_id in (parent.api_key.id, child.json()["id"], grandchild.json()["id"]):
        assert ApiKey.objects.get(id=key_id).revoked_at is not None, key_id
    assert ApiKey.objects.get(id=unrelated.api_key.id).revoked_at is None
    assert bearer(grandchild.json()["key"]).get("/api/v1/balances").status_code == 401


def test_at_most_50_active_keys(make_user, settings) -> None:
    user = make_user()
    # revoked and expired keys do not count
    gone = api_key_create(user=user, name="old", scopes=["read"])
    ApiKey.objects.filter(id=gone.api_key.id).update(revoked_at=timezone.now())
    manager = api_key_create(user=user, name="m", scopes=["read", "keys"])
    for n in range(49):
        api_key_create(user=user, name=f"k{n}", scopes=["read"])
    response = bearer(manager.secret).post(
        "/api/v1/api-keys", {"name": "51st", "scopes": ["read"]}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "too_many_api_keys"
    assert "50" in response.json()["error"]["message"]
    assert not ApiKey.objects.filter(name="51st").exists()
    # the web page refuses the same way
    client = APIClient()
    client.force_login(user)
    page = client.post(reverse("accounts:api_keys"), {"name": "web51", "scopes": ["read"]})
    assert page.status_code == 200
    assert not ApiKey.objects.filter(name="web51").exists()
    # revoking one makes room
    bearer(manager.secret).delete(f"/api/v1/api-keys/{ApiKey.objects.get(name='k0').id}")
    again = bearer(manager.secret).post(
        "/api/v1/api-keys", {"name": "51st", "scopes": ["read"]}, format="json"
    )
    assert again.status_code == 201


def test_revoking_a_trade_or_withdraw_key_needs_those_scopes(make_user) -> None:
    user = make_user()
    manager = api_key_create(user=user, name="m", scopes=["read", "keys"])
    trader = api_key_create(user=user, name="t", scopes=["read", "trade"])
    payer = api_key_create(user=user, name="w", scopes=["withdraw"])
    for target in (trader, payer):
        refused = bearer(manager.secret).delete(f"/api/v1/api-keys/{target.api_key.id}")
        assert refused.status_code == 403
        assert ApiKey.objects.get(id=target.api_key.id).revoked_at is None
    strong = api_key_create(user=user, name="s", scopes=["read", "trade", "keys"])
    assert bearer(strong.secret).delete(f"/api/v1/api-keys/{trader.api_key.id}").status_code == 200
    assert bearer(strong.secret).delete(f"/api/v1/api-keys/{payer.api_key.id}").status_code == 403
    session = APIClient()
    session.force_login(user)
    assert session.delete(f"/api/v1/api-keys/{payer.api_key.id}").status_code == 200


def test_creation_and_revocation_are_audited_with_ip_and_user_agent(make_user) -> None:
    user = make_user()
    other = make_user()
    api_key_create(user=other, name="elsewhere", scopes=["read"])
    manager = api_key_create(user=user, name="m", scopes=["read", "keys"])
    client = bearer(manager.secret, agent="audit-agent/2.0")
    child = client.post("/api/v1/api-keys", {"name": "c", "scopes": ["read"]}, format="json")
    client.delete(f"/api/v1/api-keys/{child.json()['id']}")

    log = client.get("/api/v1/audit-log")
    assert log.status_code == 200
    events = log.json()["results"]
    assert [e["action"] for e in events] == ["key_revoked", "key_created", "key_created"]
    revoked, created = events[0], events[1]
    assert created["ip"] == "203.0.113.7"
    assert created["user_agent"] == "audit-agent/2.0"
    assert created["api_key_prefix"] == manager.api_key.prefix
    assert created["details"]["key_id"] == child.json()["id"]
    assert created["details"]["scopes"] == ["read"]
    assert revoked["details"]["key_id"] == child.json()["id"]
    assert revoked["ip"] == "203.0.113.7"
    # the first key, made outside a request: recorded without an address
    assert events[2]["ip"] is None
    assert events[2]["details"]["key_id"] == manager.api_key.id

    # paginated by cursor
    page = client.get("/api/v1/audit-log?limit=2")
    assert len(page.json()["results"]) == 2
    rest = client.get(page.json()["next"])
    assert [e["action"] for e in rest.json()["results"]] == ["key_created"]

    # a read-only key may read it; nobody sees another user's events
    reader = api_key_create(user=other, name="r", scopes=["read"])
    theirs = bearer(reader.secret).get("/api/v1/audit-log").json()["results"]
    assert {e["details"]["name"] for e in theirs} == {"elsewhere", "r"}
    assert APIClient().get("/api/v1/audit-log").status_code == 401


def test_the_api_keys_page_shows_the_audit_log(client, make_user) -> None:
    user = make_user()
    client.force_login(user)
    client.post(
        reverse("accounts:api_keys"),
        {"name": "web-audited", "scopes": ["read"]},
        HTTP_USER_AGENT="page-agent/3.0",
        REMOTE_ADDR="198.51.100.4",
    )
    page = client.get(reverse("accounts:api_keys")).content.decode()
    assert "198.51.100.4" in page
    assert "page-agent/3.0" in page
    assert "web-audited" in page


def test_audit_log_is_in_the_openapi_schema(client) -> None:
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/audit-log"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"cursor", "limit", "since", "until"}
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(page["properties"]) >= {"next", "previous", "results"}
    event = schema["components"]["schemas"]["AuditEvent"]["properties"]
    assert set(event) >= {"id", "action", "created_at", "ip", "user_agent", "details"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_never_pass_the_limit(postgres, make_user) -> None:
    """The count and the insert are one step (the user's row is locked): 10 racing requests
    for the last 5 places make exactly 5 keys."""
    user = make_user()
    for n in range(45):
        api_key_create(user=user, name=f"k{n}", scopes=["read"])
    barrier = threading.Barrier(10)
    codes: list[int] = []

    def create(n: int) -> None:
        client = APIClient()
        client.force_authenticate(user)
        barrier.wait()
        try:
            codes.append(
                client.post(
                    "/api/v1/api-keys", {"name": f"race{n}", "scopes": ["read"]}, format="json"
                ).status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [201] * 5 + [409] * 5
    assert ApiKey.objects.filter(user=user).count() == 50


def test_the_audit_log_on_the_page_in_chinese(client, make_user) -> None:
    user = make_user()
    api_key_create(user=user, name="bot", scopes=["read"])
    client.force_login(user)
    page = client.get(reverse("accounts:api_keys"), HTTP_ACCEPT_LANGUAGE="zh-hans")
    body = page.content.decode()
    assert '<html lang="zh-hans">' in body
    assert "审计日志" in body
    assert "创建了 API 密钥" in body
    assert "Audit log" not in body
