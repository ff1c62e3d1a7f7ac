"""Two-factor in a real browser under the strict CSP: the QR code (a data: SVG) shows, a code
from the key turns it on, and the next login asks for a code before letting the user in."""

from __future__ import annotations

import base64

import pytest
from django.urls import reverse

from tests.web.test_browser import PASSWORD, browser, log_in, new_page, server, shot  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _code(secret: str, steps_ahead: int = 0) -> str:
    from django_otp.oath import totp

    compact = secret.replace(" ", "")
    key = base64.b32decode(compact + "=" * (-len(compact) % 8))
    return f"{totp(key, drift=steps_ahead):06d}"


def test_turn_on_two_factor_then_log_in_with_a_code(server, browser, make_user):  # noqa: F811
    from playwright.sync_api import expect

    make_user(email="tess@example.com", password=PASSWORD)
    page, console = new_page(browser)
    log_in(page, server, "tess@example.com")
    page.goto(server + reverse("accounts:profile"))
    page.locator("[data-testid=two-factor-link]").click()
    qr = page.locator("[data-testid=two-factor-qr]")
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0"), "the QR code did not load"
    shot(page, "two-factor-setup")
    secret = page.locator("[data-testid=two-factor-secret]").inner_text()
    page.fill("input[name=code]", _code(secret))
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(server + reverse("accounts:profile"))
    page.goto(server + reverse("accounts:two_factor"))
    expect(page.locator("[data-testid=two-factor-on]")).to_be_visible()
    page.locator(f"form[action='{reverse('accounts:logout')}'] button").click()
    page.wait_for_url(server + "/")

    page.goto(server + "/accounts/login/")
    page.fill("input[name=username]", "tess@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(server + reverse("accounts:login_verify"))
    shot(page, "two-factor-login")
    # the next time step's code: the one used to turn it on cannot be replayed
    page.fill("input[name=code]", _code(secret, steps_ahead=1))
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(server + "/")
    console.assert_clean()
