"""Login abuse (issue #16, finding 2): lockout, no email enumeration, TOTP two-factor."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from accounts.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-123"
LOGIN = "/accounts/login/"
LOCKED = "Too many failed login attempts"


def _login(client: Client, email: str, password: str, **extra: str):
    return client.post(LOGIN, {"username": email, "password": password, **extra})


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def _fail_five_times(client: Client, email: str) -> None:
    for attempt in range(1, 6):
        response = _login(client, email, f"wrong-{attempt}")
        assert not _logged_in(client)
        if attempt < 5:
            assert response.status_code == 200
            assert LOCKED not in response.content.decode()
    # the fifth failure reaches the limit: that answer already says so
    assert response.status_code == 429
    assert LOCKED in response.content.decode()


def test_sixth_attempt_is_refused_even_with_the_right_password(make_user) -> None:
    make_user(email="dave@example.com", password=PASSWORD)
    client = Client()
    _fail_five_times(client, "dave@example.com")

    right = _login(client, "dave@example.com", PASSWORD)

    assert right.status_code == 429
    body = right.content.decode()
    # the login page itself, with the reason and the cool-off, not a bare error page
    assert LOCKED in body
    assert re.search(r"Try again in 15\s+minutes", body)  # Django writes 15&nbsp;minutes
    assert 'name="password"' in body
    assert not _logged_in(client)


def test_lockout_is_per_account_and_per_ip(make_user) -> None:
    make_user(email="dave@example.com", password=PASSWORD)
    make_user(email="erin@example.com", password=PASSWORD)
    _fail_five_times(Client(REMOTE_ADDR="203.0.113.7"), "dave@example.com")

    # the same account from another address: locked (a distributed guess at one password)
    elsewhere = Client(REMOTE_ADDR="198.51.100.9")
    assert _login(elsewhere, "DAVE@example.com", PASSWORD).status_code == 429
    assert not _logged_in(elsewhere)
    # another account from the attacking address: locked (one address trying many accounts)
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    assert _login(attacker, "erin@example.com", PASSWORD).status_code == 429
    assert not _logged_in(attacker)
    # another account from another address is unaffected
    bystander = Client(REMOTE_ADDR="198.51.100.10")
    assert _login(bystander, "erin@example.com", PASSWORD).status_code == 302
    assert _logged_in(bystander)


def test_cool_off_expiry_lets_the_owner_in(make_user) -> None:
    from axes.models import AccessAttempt

    make_user(email="dave@example.com", password=PASSWORD)
    client = Client()
    _fail_five_times(client, "dave@example.com")
    assert _login(client, "dave@example.com", PASSWORD).status_code == 429

    # 15 minutes and a second later (the attempts are what the cool-off is measured from)
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=15, seconds=1)
    )

    assert _login(client, "dave@example.com", PASSWORD).status_code == 302
    assert _logged_in(client)


def test_admin_login_is_the_throttled_site_login(make_user) -> None:
    staff = make_user(email="root@example.com", password=PASSWORD)
    User.objects.filter(pk=staff.pk).update(is_staff=True, is_superuser=True)
    client = Client()
    # the admin has no password form of its own to guess at
    direct = client.post(
        "/admin/login/", {"username": "root@example.com", "password": PASSWORD, "next": "/admin/"}
    )
    assert direct.status_code == 302
    assert direct["Location"].startswith(LOGIN)
    assert not _logged_in(client)
    for attempt in range(5):
        client.post(
            LOGIN + "?next=/admin/", {"username": "root@example.com", "password": f"x{attempt}"}
        )
    right = client.post(
        LOGIN + "?next=/admin/", {"username": "root@example.com", "password": PASSWORD}
    )
    assert right.status_code == 429
    assert LOCKED in right.content.decode()
    assert not _logged_in(client)
    assert client.get("/admin/").status_code == 302


# --- signup and password reset never tell whether an email is registered ---------------------


def _signup(client: Client, email: str):
    return client.post(
        reverse("accounts:signup"), {"email": email, "password": PASSWORD, "role": "buyer"}
    )


def _visible(response) -> str:
    """The page without what differs per request anyway (CSRF token, CSP nonces)."""
    body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
    body = re.sub(r'"X-CSRFToken": "[^"]+"', "", body)
    return re.sub(r'nonce="[^"]+"', "", body)


def test_signup_answers_the_same_for_a_registered_and_a_new_email(make_user, settings) -> None:
    settings.SIGNUP_CONFIRM_EMAIL = True
    make_user(email="bob@example.com", password="the-Owners-pass-9")

    taken, fresh = Client(), Client()
    taken_response = _signup(taken, "bob@example.com")
    fresh_response = _signup(fresh, "newcomer@example.com")

    assert taken_response.status_code == fresh_response.status_code == 302
    assert taken_response["Location"] == fresh_response["Location"]
    assert _visible(taken.get(taken_response["Location"])) == _visible(
        fresh.get(fresh_response["Location"])
    )
    assert not _logged_in(taken)
    assert not _logged_in(fresh)
    # the owner's password is untouched; the owner is told, the newcomer gets a link
    assert User.objects.get(email="bob@example.com").check_password("the-Owners-pass-9")
    by_address = {message.to[0]: message.body for message in mail.outbox}
    assert set(by_address) == {"bob@example.com", "newcomer@example.com"}
    assert "already has an account" in by_address["bob@example.com"]
    assert not User.objects.get(email="newcomer@example.com").is_active

    # the newcomer's link activates the account and logs them in: a button (a mail scanner
    # fetching the link activates nothing), then in
    link = re.search(r"https?://[^/\s]+(/\S+)", by_address["newcomer@example.com"]).group(1)
    assert fresh.get(link).status_code == 200
    assert not User.objects.get(email="newcomer@example.com").is_active
    welcome = fresh.post(link)
    assert welcome.status_code == 302
    assert _logged_in(fresh)
    assert User.objects.get(email="newcomer@example.com").is_active
    # a link works once
    assert Client().post(link).status_code == 400
    assert Client().get(link).status_code == 400


def test_signup_refuses_a_weak_password_alike_for_a_registered_and_a_new_email(
    make_user, settings
) -> None:
    settings.SIGNUP_CONFIRM_EMAIL = True
    make_user(email="bob@example.com", password="the-Owners-pass-9")
    answers = []
    for email in ("bob@example.com", "newcomer@example.com"):
        response = Client().post(
            reverse("accounts:signup"), {"email": email, "password": "12345678", "role": "buyer"}
        )
        assert response.status_code == 200
        answers.append(_visible(response).replace(email, "EMAIL"))
    assert answers[0] == answers[1]
    assert "too common" in answers[0]
    assert not User.objects.filter(email="newcomer@example.com").exists()
    assert mail.outbox == []


def test_password_reset_answers_the_same_for_a_registered_and_an_unknown_email(
    make_user,
) -> None:
    make_user(email="bob@example.com", password=PASSWORD)
    url = reverse("accounts:password_reset")

    known = Client().post(url, {"email": "bob@example.com"})
    unknown = Client().post(url, {"email": "nobody@example.com"})

    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"]
    assert [message.to for message in mail.outbox] == [["bob@example.com"]]
    link = re.search(r"https?://[^/\s]+(/\S+)", mail.outbox[0].body).group(1)
    client = Client()
    form = client.get(link, follow=True)
    assert form.status_code == 200
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a-New-pass-456", "new_password2": "a-New-pass-456"},
    )
    assert done.status_code == 302
    assert User.objects.get(email="bob@example.com").check_password("a-New-pass-456")


# --- TOTP two-factor ----------------------------------------------------------------------------


def _code(device, *, steps_ahead: int = 0) -> str:
    from django_otp.oath import TOTP

    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def _enable_two_factor(client: Client):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    page = client.get(reverse("accounts:two_factor"))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'src="data:image/svg+xml;base64,' in body  # the QR code, allowed by the CSP
    device = TOTPDevice.objects.get(confirmed=False)
    assert device.key.upper() not in body  # shown as base32, not as the raw hex key
    confirmed = client.post(reverse("accounts:two_factor"), {"code": _code(device)})
    assert confirmed.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    return device


def test_totp_enabled_on_the_profile_then_required_at_login(make_user) -> None:
    user = make_user(email="tess@example.com", password=PASSWORD)
    client = Client()
    client.force_login(user)
    assert (
        reverse("accounts:two_factor") in client.get(reverse("accounts:profile")).content.decode()
    )
    device = _enable_two_factor(client)
    client.post(reverse("accounts:logout"))

    step_one = _login(client, "tess@example.com", PASSWORD, next="/portfolio/")
    assert step_one.status_code == 302
    assert step_one["Location"] == reverse("accounts:login_verify")
    assert not _logged_in(client)  # the password alone does not log in

    valid = {_code(device, steps_ahead=offset) for offset in (-1, 0, 1, 2)}
    wrong_code = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)
    wrong = client.post(reverse("accounts:login_verify"), {"code": wrong_code})
    assert wrong.status_code == 200
    assert "wrong" in wrong.content.decode().lower()
    assert not _logged_in(client)

    # the next time step: the code used to enable the device cannot be replayed
    device.refresh_from_db()
    device.throttle_reset()
    right = client.post(reverse("accounts:login_verify"), {"code": _code(device, steps_ahead=1)})
    assert right.status_code == 302
    assert right["Location"] == "/portfolio/"
    assert _logged_in(client)


def test_verify_step_without_a_password_step_logs_nobody_in(make_user) -> None:
    client = Client()
    response = client.post(reverse("accounts:login_verify"), {"code": "123456"})
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:login")
    assert not _logged_in(client)


def test_staff_must_set_up_two_factor_before_the_admin(make_user) -> None:
    staff = make_user(email="root@example.com", password=PASSWORD)
    User.objects.filter(pk=staff.pk).update(is_staff=True, is_superuser=True)
    client = Client()

    login = client.post(
        LOGIN + "?next=/admin/", {"username": "root@example.com", "password": PASSWORD}
    )
    assert login.status_code == 302
    assert login["Location"].startswith(reverse("accounts:two_factor"))
    # logged in to the site, but the admin stays closed until a device is confirmed
    assert client.get("/admin/").status_code == 302
    assert client.get("/admin/login/")["Location"].startswith(reverse("accounts:two_factor"))

    device = _enable_two_factor(client)
    assert client.get("/admin/").status_code == 200
    # and staff cannot switch it off
    assert (
        client.post(
            reverse("accounts:two_factor_disable"), {"code": _code(device, steps_ahead=1)}
        ).status_code
        == 403
    )

    # next time: password, then the code, then the admin
    client.post(reverse("accounts:logout"))
    step_one = client.post(
        LOGIN + "?next=/admin/", {"username": "root@example.com", "password": PASSWORD}
    )
    assert step_one["Location"] == reverse("accounts:login_verify")
    assert client.get("/admin/").status_code == 302
    device.refresh_from_db()
    done = client.post(reverse("accounts:login_verify"), {"code": _code(device, steps_ahead=1)})
    assert done["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_user_can_switch_two_factor_off_with_a_code(make_user) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = make_user(email="tess@example.com", password=PASSWORD)
    client = Client()
    client.force_login(user)
    device = _enable_two_factor(client)
    refused = client.post(reverse("accounts:two_factor_disable"), {"code": "not-a-code"})
    assert refused.status_code == 200
    assert TOTPDevice.objects.filter(user=user).exists()
    device.refresh_from_db()
    device.throttle_reset()  # a wrong code makes the device wait a second before the next
    off = client.post(
        reverse("accounts:two_factor_disable"), {"code": _code(device, steps_ahead=1)}
    )
    assert off.status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()
    again = _login(Client(), "tess@example.com", PASSWORD)
    assert again.status_code == 302
    assert again["Location"] == "/"  # straight in: no code asked for


def test_wrong_codes_count_towards_the_lockout(make_user) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = make_user(email="tess@example.com", password=PASSWORD)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client = Client()
    assert _login(client, "tess@example.com", PASSWORD)["Location"] == reverse(
        "accounts:login_verify"
    )
    valid = {_code(device, steps_ahead=offset) for offset in (-1, 0, 1, 2)}
    wrong_code = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)
    for attempt in range(1, 6):
        TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)
        wrong = client.post(reverse("accounts:login_verify"), {"code": wrong_code})
        assert wrong.status_code == (429 if attempt == 5 else 200)
    right = client.post(reverse("accounts:login_verify"), {"code": _code(device)})
    assert right.status_code == 429
    assert LOCKED in right.content.decode()
    assert not _logged_in(client)
