import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Profile, User

pytestmark = pytest.mark.django_db


def test_signup_creates_user_with_profile_and_logs_in(client: Client, settings) -> None:
    # the demo's signup (DEMO=1): in at once; elsewhere a link confirms the email first
    # (tests/accounts/test_login_security.py)
    settings.SIGNUP_CONFIRM_EMAIL = False
    response = client.post(
        reverse("accounts:signup"),
        {
            "email": "Alice@Example.com",
            "password": "a-Strong-pass-123",
            "role": "provider",
            "display_name": "Alice Compute",
            "regions": ["cn-east", "cn-north"],
        },
    )
    assert response.status_code == 302
    user = User.objects.get(email="alice@example.com")
    # a provider role is an application for staff (tests/accounts/test_onboarding.py)
    assert user.profile.role == "buyer"
    assert user.provider_applications.get().status == "pending"
    assert user.profile.display_name == "Alice Compute"
    assert user.profile.regions == ["cn-east", "cn-north"]
    assert client.get(reverse("accounts:profile")).status_code == 200


def test_signup_refuses_duplicate_email_and_weak_password(
    client: Client, make_user, settings
) -> None:
    settings.SIGNUP_CONFIRM_EMAIL = False  # the demo's signup; elsewhere it never says so
    make_user(email="bob@example.com")
    response = client.post(
        reverse("accounts:signup"),
        {"email": "bob@example.com", "password": "a-Strong-pass-123", "role": "buyer"},
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    response = client.post(
        reverse("accounts:signup"),
        {"email": "carol@example.com", "password": "12345678", "role": "buyer"},
    )
    assert response.status_code == 200
    assert not User.objects.filter(email="carol@example.com").exists()
    assert Profile.objects.count() == 1


def test_login_with_email_and_logout(client: Client, make_user) -> None:
    make_user(email="dave@example.com", password="a-Strong-pass-123")
    bad = client.post(
        reverse("accounts:login"), {"username": "dave@example.com", "password": "wrong-one"}
    )
    assert bad.status_code == 200
    assert "_auth_user_id" not in client.session
    good = client.post(
        reverse("accounts:login"),
        {"username": "dave@example.com", "password": "a-Strong-pass-123"},
    )
    assert good.status_code == 302
    assert "_auth_user_id" in client.session
    assert client.get(reverse("accounts:logout")).status_code == 405  # logout is POST only
    assert client.post(reverse("accounts:logout")).status_code == 302
    assert "_auth_user_id" not in client.session


def test_forms_are_csrf_protected(make_user) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        reverse("accounts:signup"),
        {"email": "eve@example.com", "password": "a-Strong-pass-123", "role": "buyer"},
    )
    assert response.status_code == 403
    assert not User.objects.filter(email="eve@example.com").exists()
    page = client.get(reverse("accounts:login"))
    assert b"csrfmiddlewaretoken" in page.content


def test_home_page_lists_markets(client: Client) -> None:
    from django.core.management import call_command

    call_command("load_demo_markets")
    page = client.get("/")
    assert page.status_code == 200
    assert "QWEN3.6-PLUS-OUT-CNY" in page.content.decode()


def test_unknown_page_is_a_real_404(client: Client) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "does not exist" in response.content.decode()
    api = client.get("/api/v1/no-such-endpoint")
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "not_found"
