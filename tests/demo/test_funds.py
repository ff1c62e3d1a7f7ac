"""Demo funds: a labelled staff adjustment, once per account per UTC day, only on a demo; and
the deposit page in each of its three states (demo, Stripe, neither)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from exchange.demo.funds import (
    MEMO,
    DemoFundsAlreadyGranted,
    DemoFundsUnavailable,
    demo_funds_grant,
)
from exchange.demo.seed import STAFF_EMAIL
from exchange.ledger import selectors as ledger_selectors
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.selectors import audit_run
from exchange.markets.models import Market

pytestmark = pytest.mark.django_db

CNY = 10**8
USD = 10**8
NOON = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def balances(user: Any) -> tuple[int, int]:
    return (
        ledger_selectors.balance_get(user=user, asset="CNY").available,
        ledger_selectors.balance_get(user=user, asset="USD").available,
    )


@pytest.fixture
def stripe_off(settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""
    settings.STRIPE_ENABLED = False


@pytest.fixture
def newcomer(make_user: Any, stripe_off: None) -> Any:
    return make_user(role="buyer")


@pytest.fixture
def browser(newcomer: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(newcomer)
    return client


def csrf_post(client: Client, path: str, data: dict[str, str]) -> Any:
    page = client.get("/funding/deposits/")
    return client.post(path, {**data, "csrfmiddlewaretoken": page.context["csrf_token"]})


def test_grants_labelled_demo_funds_once_a_day(markets: list[Market], newcomer: Any) -> None:
    granted = demo_funds_grant(user=newcomer, now=NOON)
    assert [(g.currency, g.amount) for g in granted] == [
        ("CNY", 10_000 * CNY),
        ("USD", 1_500 * USD),
    ]
    assert balances(newcomer) == (10_000 * CNY, 1_500 * USD)
    entries = LedgerTransaction.objects.filter(idempotency_key__startswith="demo-funds:")
    assert entries.count() == 2
    for entry in entries:
        assert entry.kind == "adjustment"
        assert entry.memo == MEMO
        assert entry.memo.startswith("Demo funds")
        assert entry.staff_user.email == STAFF_EMAIL
    assert audit_run().is_ok


def test_a_second_grant_the_same_utc_day_is_refused_and_changes_nothing(
    markets: list[Market], newcomer: Any
) -> None:
    demo_funds_grant(user=newcomer, now=NOON)
    before = (balances(newcomer), LedgerTransaction.objects.count())
    late = NOON.replace(hour=23, minute=59)
    with pytest.raises(DemoFundsAlreadyGranted):
        demo_funds_grant(user=newcomer, now=late)
    assert (balances(newcomer), LedgerTransaction.objects.count()) == before
    # the next UTC day, again
    demo_funds_grant(user=newcomer, now=NOON + timedelta(days=1))
    assert balances(newcomer) == (20_000 * CNY, 3_000 * USD)


def test_each_account_has_its_own_day(markets: list[Market], newcomer: Any, make_user) -> None:
    other = make_user(role="buyer")
    demo_funds_grant(user=newcomer, now=NOON)
    demo_funds_grant(user=other, now=NOON)
    assert balances(other) == (10_000 * CNY, 1_500 * USD)


def test_not_available_when_demo_is_off(
    markets: list[Market], browser: Client, newcomer: Any, settings: Any
) -> None:
    settings.DEMO = False
    before = LedgerTransaction.objects.count()
    with pytest.raises(DemoFundsUnavailable):
        demo_funds_grant(user=newcomer)
    response = csrf_post(browser, "/funding/demo-funds/", {})
    assert response.status_code == 404
    page = browser.get("/funding/deposits/").content.decode()
    assert "Get demo funds" not in page
    assert "demo-funds" not in browser.get("/portfolio/").content.decode()
    assert (balances(newcomer), LedgerTransaction.objects.count()) == ((0, 0), before)


def test_the_button_grants_then_says_it_was_today(markets: list[Market], browser: Client) -> None:
    page = browser.get("/funding/deposits/").content.decode()
    assert "Get demo funds" in page
    assert 'action="/funding/demo-funds/"' in page
    assert "10,000.00 CNY and 1,500.00 USD" in page
    assert "manage.py" not in page
    response = csrf_post(browser, "/funding/demo-funds/", {"next": "/portfolio/"})
    assert (response.status_code, response["Location"]) == (302, "/portfolio/")
    portfolio = browser.get("/portfolio/").content.decode()
    assert "10,000.00 CNY and 1,500.00 USD of demo funds added to your account." in portfolio
    again = csrf_post(browser, "/funding/demo-funds/", {"next": "https://evil.example/"})
    assert again["Location"] == "/funding/deposits/"  # only a local page to go back to
    page = browser.get("/funding/deposits/").content.decode()
    assert "You have had today&#x27;s demo funds" in page
    assert 'data-testid="demo-funds-form"' not in page
    assert LedgerTransaction.objects.filter(idempotency_key__startswith="demo-funds:").count() == 2


def test_the_form_needs_csrf_and_post(markets: list[Market], browser: Client, newcomer) -> None:
    assert browser.post("/funding/demo-funds/").status_code == 403
    assert browser.get("/funding/demo-funds/").status_code == 405
    assert balances(newcomer) == (0, 0)


def test_portfolio_has_the_button_on_a_demo(markets: list[Market], browser: Client) -> None:
    page = browser.get("/portfolio/").content.decode()
    assert 'data-testid="demo-funds-form"' in page
    assert 'action="/funding/demo-funds/"' in page
    assert "Get demo funds" in page


def test_the_button_in_chinese(markets: list[Market], browser: Client) -> None:
    browser.cookies["django_language"] = "zh-hans"
    page = browser.get("/funding/deposits/", headers={"accept-language": "zh-hans"})
    assert "领取模拟资金" in page.content.decode()


def test_without_demo_or_stripe_the_page_says_whom_to_contact(
    make_user: Any, stripe_off: None, settings: Any, client: Client
) -> None:
    settings.SUPPORT_EMAIL = "help@exchange.example"
    client.force_login(make_user(role="buyer"))
    page = client.get("/funding/deposits/").content.decode()
    assert "This exchange is not accepting deposits." in page
    assert "For questions about your account, write to help@exchange.example." in page
    assert "ledger_adjust" not in page
    assert "Get demo funds" not in page
    settings.SUPPORT_EMAIL = ""
    page = client.get("/funding/deposits/").content.decode()
    assert "contact the operator of this exchange" in page


def test_with_stripe_the_page_is_checkout(make_user: Any, settings: Any, client: Client) -> None:
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_ENABLED = True
    client.force_login(make_user(role="buyer"))
    page = client.get("/funding/deposits/").content.decode()
    assert "Continue to payment" in page
    assert "not accepting deposits" not in page
    assert "Get demo funds" not in page
