"""Provider onboarding (#16 finding 3): becoming a provider is an application staff decide in the
admin; until approved an account cannot list capacity (API and web: 403 provider_not_approved),
nothing written. Operators' create_user and the demo data are granted at once."""

from __future__ import annotations

import importlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApplicationStatus, Profile, ProviderApplication, User
from accounts.services import api_key_create, user_create
from exchange.ledger.models import LedgerTransaction
from exchange.markets.services import DEMO_MARKETS, market_create
from orders.models import CapacityListing

pytestmark = pytest.mark.django_db

SYMBOL = "QWEN3.6-PLUS-OUT-CNY"
PASSWORD = "a-Strong-pass-123"


@pytest.fixture
def market():
    spec = next(m for m in DEMO_MARKETS if m["symbol"] == SYMBOL)
    return market_create(**{**spec, "maker_fee_rate": Decimal(0), "taker_fee_rate": Decimal(0)})


def bot(user) -> APIClient:
    client = APIClient()
    key = api_key_create(user=user, name="bot", scopes=["read", "trade"])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    return client


def list_capacity(user, quantity: str = "1"):
    until = timezone.now() + timedelta(days=1)
    return bot(user).post(
        "/api/v1/capacity",
        {"market": SYMBOL, "quantity": quantity, "available_until": until.isoformat()},
        format="json",
    )


def staff_client(admin_login) -> tuple[Client, User]:
    staff = User.objects.create_user(email="staff@example.com", password=PASSWORD, is_staff=True)
    staff.is_superuser = True
    staff.save(update_fields=["is_superuser"])
    client = Client()
    admin_login(client, staff)
    return client, staff


def decide(client: Client, application: ProviderApplication, action: str, reason: str):
    return client.post(
        reverse("admin:accounts_providerapplication_changelist"),
        {"action": action, "_selected_action": [application.pk], "decide": "1", "reason": reason},
    )


def test_a_provider_signup_is_a_pending_application_that_cannot_list(market, settings) -> None:
    settings.SIGNUP_CONFIRM_EMAIL = False
    client = Client()
    client.post(
        reverse("accounts:signup"),
        {"email": "p@example.com", "password": PASSWORD, "role": "provider"},
    )
    user = User.objects.get(email="p@example.com")
    assert user.profile.role == "buyer"
    application = ProviderApplication.objects.get(user=user)
    assert (application.status, application.role) == ("pending", "provider")

    response = list_capacity(user)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "provider_not_approved"
    assert "waiting for review" in response.json()["error"]["message"]
    assert not CapacityListing.objects.exists()
    assert not LedgerTransaction.objects.exists()
    # the web form too: the dashboard is for providers
    page = client.post(
        reverse("web:provider"),
        {"market": market.id, "quantity": "1", "available_until": "2030-01-01T00:00"},
    )
    assert page.status_code == 403
    assert "waiting for review" in page.content.decode()
    assert not CapacityListing.objects.exists()
    status = client.get(reverse("accounts:profile")).content.decode()
    assert 'data-status="pending"' in status


def test_a_buyer_who_never_applied_is_told_to_apply(market, make_user) -> None:
    response = list_capacity(make_user(role="buyer"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "provider_not_approved"
    assert "apply on your profile page" in response.json()["error"]["message"]


def test_the_profile_page_applies_and_staff_approve_in_the_admin(
    market, make_user, admin_login
) -> None:
    user = make_user(role="buyer")
    client = Client()
    client.force_login(user)
    page = client.get(reverse("accounts:profile")).content.decode()
    assert 'data-testid="provider-apply"' in page
    assert 'name="role"' not in page.split('data-testid="provider-application"')[0]
    client.post(
        reverse("accounts:provider_apply"), {"role": "both", "message": "20 H100s, cn-east"}
    )
    application = ProviderApplication.objects.get(user=user)
    assert (application.status, application.role) == ("pending", "both")
    assert application.message == "20 H100s, cn-east"
    assert Profile.objects.get(user=user).role == "buyer"
    assert list_capacity(user).status_code == 403

    staff_view, staff = staff_client(admin_login)
    asking = staff_view.post(
        reverse("admin:accounts_providerapplication_changelist"),
        {"action": "approve", "_selected_action": [application.pk]},
    )
    assert asking.status_code == 200  # the reason is asked for first; nothing decided yet
    assert "Reason" in asking.content.decode()
    application.refresh_from_db()
    assert application.status == "pending"
    response = decide(staff_view, application, "approve", "Checked the contract.")
    assert response.status_code == 302
    application.refresh_from_db()
    assert application.status == ApplicationStatus.APPROVED
    assert application.decided_by == staff
    assert application.decided_at is not None
    assert application.reason == "Checked the contract."
    assert Profile.objects.get(user=user).role == "both"
    response = list_capacity(user)
    assert response.status_code == 201, response.json()
    page = client.get(reverse("accounts:profile")).content.decode()
    assert 'data-status="approved"' in page


def test_a_rejection_is_shown_with_its_reason_and_the_user_may_apply_again(
    market, make_user, admin_login
) -> None:
    user = make_user(role="buyer")
    client = Client()
    client.force_login(user)
    client.post(reverse("accounts:provider_apply"), {"role": "provider"})
    application = ProviderApplication.objects.get(user=user)
    staff_view, _staff = staff_client(admin_login)
    decide(staff_view, application, "reject", "No contract on file.")
    application.refresh_from_db()
    assert application.status == "rejected"
    page = client.get(reverse("accounts:profile")).content.decode()
    assert 'data-status="rejected"' in page
    assert "No contract on file." in page
    assert list_capacity(user).status_code == 403
    # a second application; approving the old one is refused (not the newest)
    client.post(reverse("accounts:provider_apply"), {"role": "provider"})
    assert ProviderApplication.objects.filter(user=user, status="pending").count() == 1
    decide(staff_view, application, "approve", "changed my mind")
    application.refresh_from_db()
    assert application.status == "rejected"
    assert Profile.objects.get(user=user).role == "buyer"


def test_withdrawing_an_approval_ends_the_provider_role(market, make_user, admin_login) -> None:
    user = make_user(role="provider")
    assert list_capacity(user).status_code == 201
    application = ProviderApplication.objects.get(user=user)
    staff_view, _staff = staff_client(admin_login)
    decide(staff_view, application, "reject", "Contract ended.")
    assert Profile.objects.get(user=user).role == "buyer"
    response = list_capacity(user)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "provider_not_approved"
    assert CapacityListing.objects.count() == 1


def test_the_role_cannot_be_set_through_the_profile_form_or_the_admin_inline(make_user) -> None:
    user = make_user(role="buyer")
    client = Client()
    client.force_login(user)
    client.post(reverse("accounts:profile"), {"role": "provider", "display_name": "X"})
    assert Profile.objects.get(user=user).role == "buyer"
    assert Profile.objects.get(user=user).display_name == "X"


def test_an_operator_creates_a_working_provider(market) -> None:
    call_command("create_user", "ops-made@example.com", "--role", "provider")
    user = User.objects.get(email="ops-made@example.com")
    application = ProviderApplication.objects.get(user=user)
    assert application.status == "approved"
    assert "create_user" in application.reason
    assert list_capacity(user).status_code == 201


def test_a_signup_role_is_never_granted_without_a_reason() -> None:
    user = user_create(email="x@example.com", password=None, role="both")
    assert Profile.objects.get(user=user).role == "buyer"
    assert ProviderApplication.objects.get(user=user).status == "pending"


def test_providers_from_before_onboarding_are_approved_by_the_migration(make_user) -> None:
    user = make_user(role="buyer")
    Profile.objects.filter(user=user).update(role="both")  # as before migration 0006
    migration = importlib.import_module("accounts.migrations.0006_provider_application")
    migration.approve_existing_providers(django_apps, None)
    migration.approve_existing_providers(django_apps, None)  # idempotent
    application = ProviderApplication.objects.get(user=user)
    assert (application.status, application.role) == ("approved", "both")


def test_the_refusal_and_the_profile_page_speak_chinese(market, make_user) -> None:
    user = make_user(role="buyer")
    client = bot(user)
    until = timezone.now() + timedelta(days=1)
    response = client.post(
        "/api/v1/capacity",
        {"market": SYMBOL, "quantity": "1", "available_until": until.isoformat()},
        format="json",
        HTTP_ACCEPT_LANGUAGE="zh-hans",
    )
    assert (
        response.json()["error"]["message"]
        == "只有获批的提供方才能挂出容量：请在个人资料页面申请。"
    )
    page = Client(headers={"accept-language": "zh-hans"})
    page.force_login(user)
    assert "申请成为提供方" in page.get(reverse("accounts:profile")).content.decode()
