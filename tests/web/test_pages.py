"""View tests of the trading pages: rendering, permissions, CSRF, htmx partials."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from orders.models import CapacityListing, Order, Trade
from tests.orders.conftest import SYMBOL

pytestmark = pytest.mark.django_db
PASSWORD = "a-Strong-pass-123"
# a listing ends at most CAPACITY_MAX_HORIZON_DAYS (90) ahead
UNTIL = (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%d")


def logged_in(make_user, role: str = "buyer") -> tuple[Client, object]:
    user = make_user(role=role)
    client = Client()
    client.force_login(user)
    return client, user


def test_public_pages_render_for_visitors(client: Client, market) -> None:
    for url in ("/", reverse("web:markets"), reverse("web:trade", args=[SYMBOL])):
        response = client.get(url)
        assert response.status_code == 200, url
        assert SYMBOL in response.content.decode()
    trade = client.get(reverse("web:trade", args=[SYMBOL])).content.decode()
    assert "Log in or create an account to place orders." in trade
    assert 'id="order-form"' not in trade


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("web:portfolio", []),
        ("web:provider", []),
        ("web:orders", [SYMBOL]),
        ("web:balances", [SYMBOL]),
        ("accounts:profile", []),
        ("accounts:api_keys", []),
    ],
)
def test_private_pages_send_visitors_to_log_in(client: Client, market, name, args) -> None:
    url = reverse(name, args=args)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:login')}?next={url}"


def test_private_posts_send_visitors_to_log_in(client: Client, market) -> None:
    response = client.post(reverse("web:order_create", args=[SYMBOL]), {"side": "buy"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert not Order.objects.exists()


def test_buyer_cannot_open_the_provider_dashboard(make_user, market) -> None:
    client, _ = logged_in(make_user, "buyer")
    response = client.get(reverse("web:provider"))
    assert response.status_code == 403
    assert "cannot open this page" in response.content.decode()
    response = client.post(
        reverse("web:provider"),
        {"market": market.id, "quantity": "10", "available_until": f"{UNTIL}T00:00"},
    )
    assert response.status_code == 403
    assert not CapacityListing.objects.exists()
    nav = client.get("/").content.decode()
    assert reverse("web:provider") not in nav


def test_provider_lists_capacity_and_sees_it(make_user, market) -> None:
    client, user = logged_in(make_user, "provider")
    from tests.delivery.endpoints.helpers import live_endpoint

    live_endpoint(user, market)  # an ask needs a live delivery endpoint
    page = client.get(reverse("web:provider"))
    assert page.status_code == 200
    response = client.post(
        reverse("web:provider"),
        {
            "market": market.id,
            "quantity": "50",
            "available_until": f"{UNTIL}T00:00",
            "ask_price": "9.50",
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="provider-dashboard"' in body
    assert "<html" not in body
    listing = CapacityListing.objects.get(provider=user)
    assert listing.quantity_lots == 50_000
    # the ask at the tick's decimals, the quantity at the lot's, the date and time apart
    assert '<td class="num">9.50</td>' in body
    assert '<td class="num">50.000</td>' in body
    assert "50,000,000" in body
    assert f"<td>{UNTIL} 00:00</td>" in body
    assert f"{UNTIL}00:00" not in body
    assert Order.objects.get(user=user).side == "sell"


def test_portfolio_shows_balances_allocations_and_statement_link(make_user, market, fund) -> None:
    client, user = logged_in(make_user, "buyer")
    fund(user, cny=1000)
    page = client.get(reverse("web:portfolio"))
    assert page.status_code == 200
    body = page.content.decode()
    assert '<td class="num">1,000.00</td>' in body
    assert reverse("ledger-statement") in body
    assert reverse("funding:deposits") in body
    statement = client.get(
        reverse("ledger-statement"), {"start": "2020-01-01", "end": "2099-01-01"}
    )
    assert statement.status_code == 200
    assert statement["Content-Type"].startswith("text/csv")


def test_trade_page_for_a_trader_has_form_balances_and_orders(make_user, market, fund) -> None:
    client, user = logged_in(make_user, "both")
    fund(user, cny=100)
    body = client.get(reverse("web:trade", args=[SYMBOL])).content.decode()
    assert 'id="order-form"' in body
    assert 'data-quote-units="10000000000"' in body
    assert "No open orders." in body


def test_unknown_market_is_404(client: Client, market) -> None:
    response = client.get(reverse("web:trade", args=["NOPE-CNY"]))
    assert response.status_code == 404
    assert "does not exist" in response.content.decode()


def test_place_and_cancel_an_order_through_the_htmx_views(make_user, market, fund) -> None:
    client, user = logged_in(make_user, "buyer")
    fund(user, cny=1000)
    response = client.post(
        reverse("web:order_create", args=[SYMBOL]),
        {"side": "buy", "type": "limit", "price": "8.10", "quantity": "2.5",
         "time_in_force": "GTC"},
        HTTP_HX_REQUEST="true",
    )  # fmt: skip
    assert response.status_code == 200
    assert response["HX-Trigger"] == "orders-changed"
    order = Order.objects.get(user=user)
    assert (order.price_ticks, order.quantity_lots, order.status) == (810, 2500, "open")
    assert (
        f'Order #{order.id}: <strong data-field="status">Open</strong>, filled '
        '<span data-field="filled">0.000</span> of 2.500 MTok.'
    ) in response.content.decode()
    panel = client.get(
        reverse("web:orders", args=[SYMBOL]), {"tab": "open"}, HTTP_HX_REQUEST="true"
    )
    assert f'data-order-id="{order.id}"' in panel.content.decode()
    cancelled = client.post(reverse("web:order_cancel", args=[order.id]), HTTP_HX_REQUEST="true")
    assert cancelled.status_code == 200
    order.refresh_from_db()
    assert order.status == "cancelled"
    assert "No open orders." in cancelled.content.decode()
    history = client.get(reverse("web:orders", args=[SYMBOL]), {"tab": "history"})
    assert f'data-order-id="{order.id}"' in history.content.decode()
    assert "Cancelled by you." in history.content.decode()


def test_order_errors_are_shown_and_nothing_is_placed(make_user, market) -> None:
    client, _user = logged_in(make_user, "buyer")
    response = client.post(
        reverse("web:order_create", args=[SYMBOL]),
        {"side": "buy", "type": "limit", "price": "8.105", "quantity": "1"},
        HTTP_HX_REQUEST="true",
    )
    assert "not a multiple of the tick size" in response.content.decode()
    response = client.post(
        reverse("web:order_create", args=[SYMBOL]),
        {"side": "buy", "type": "limit", "price": "8.10", "quantity": "1"},
        HTTP_HX_REQUEST="true",
    )
    assert 'data-testid="order-error"' in response.content.decode()  # no money
    assert not Order.objects.filter(status="open").exists()


def test_cancel_all_and_another_users_order_is_not_found(make_user, market, fund) -> None:
    client, user = logged_in(make_user, "buyer")
    fund(user, cny=1000)
    for price in ("7.90", "7.80"):
        client.post(
            reverse("web:order_create", args=[SYMBOL]),
            {"side": "buy", "type": "limit", "price": price, "quantity": "1"},
            HTTP_HX_REQUEST="true",
        )
    other, _ = logged_in(make_user, "buyer")
    mine = Order.objects.filter(user=user).first()
    other.post(reverse("web:order_cancel", args=[mine.id]), HTTP_HX_REQUEST="true")
    mine.refresh_from_db()
    assert mine.status == "open"
    response = client.post(reverse("web:order_cancel_all", args=[SYMBOL]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert set(Order.objects.filter(user=user).values_list("status", flat=True)) == {"cancelled"}


def test_fills_tab_lists_my_trades(make_user, market, fund) -> None:
    seller_client, seller = logged_in(make_user, "provider")
    buyer_client, buyer = logged_in(make_user, "buyer")
    fund(seller, tokens=5_000_000, market=market)
    fund(buyer, cny=1000)
    seller_client.post(
        reverse("web:order_create", args=[SYMBOL]),
        {"side": "sell", "type": "limit", "price": "8.00", "quantity": "2"},
    )
    buyer_client.post(
        reverse("web:order_create", args=[SYMBOL]),
        {"side": "buy", "type": "market", "quantity": "1.5", "time_in_force": "IOC"},
    )
    assert Trade.objects.count() == 1
    fills = buyer_client.get(reverse("web:orders", args=[SYMBOL]), {"tab": "fills"})
    assert "1,500,000" in fills.content.decode()
    sales = seller_client.get(reverse("web:provider")).content.decode()
    assert "1,500,000" in sales


def test_forms_are_csrf_protected(make_user, market, fund) -> None:
    user = make_user(role="both")
    fund(user, cny=1000)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    for url, data in (
        (reverse("web:order_create", args=[SYMBOL]),
         {"side": "buy", "type": "limit", "price": "8", "quantity": "1"}),
        (reverse("web:provider"),
         {"market": market.id, "quantity": "5", "available_until": f"{UNTIL}T00:00"}),
        (reverse("web:order_cancel_all", args=[SYMBOL]), {}),
    ):  # fmt: skip
        assert client.post(url, data, HTTP_HX_REQUEST="true").status_code == 403
    assert not Order.objects.exists()
    assert not CapacityListing.objects.exists()
    page = client.get(reverse("web:trade", args=[SYMBOL])).content.decode()
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    ok = client.post(
        reverse("web:order_create", args=[SYMBOL]),
        {"side": "buy", "type": "limit", "price": "8", "quantity": "1"},
        HTTP_HX_REQUEST="true",
        HTTP_X_CSRFTOKEN=token,
    )
    assert ok.status_code == 200
    assert Order.objects.count() == 1


def test_pages_carry_a_nonce_csp_and_no_inline_script_without_it(client: Client, market) -> None:
    response = client.get(reverse("web:trade", args=[SYMBOL]))
    policy = response["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    body = response.content.decode()
    scripts = re.findall(r"<script\b([^>]*)>", body)
    assert scripts
    for attributes in scripts:
        if "application/json" in attributes:
            continue  # data, not code
        assert f'nonce="{nonce}"' in attributes, attributes
    # every script and stylesheet from this site (a random nonce or csrf token may spell "cdn")
    sources = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"', body)
    assert sources
    assert [s for s in sources if s.startswith(("http:", "https:", "//"))] == []


def test_red_up_preference_sets_the_page_class(make_user, market) -> None:
    client, user = logged_in(make_user, "buyer")
    user.profile.color_up_red = True
    user.profile.save()
    assert 'class="red-up' in client.get("/").content.decode()
    user.profile.color_up_red = False
    user.profile.save()
    assert 'class="red-up' not in client.get("/").content.decode()


def test_language_switch_translates_pages(client: Client, market) -> None:
    client.post(reverse("set_language"), {"language": "zh-hans", "next": "/"})
    body = client.get(reverse("web:trade", args=[SYMBOL])).content.decode()
    assert "订单簿" in body
    assert 'lang="zh-hans"' in body


def test_server_error_page_is_standalone(rf) -> None:
    from django.utils import translation

    from exchange.error_views import server_error

    with translation.override("en"):
        response = server_error(rf.get("/trade/X/"))
    assert response.status_code == 500
    assert "Your orders and balances are safe" in response.content.decode()


def test_home_shows_the_demo_login_only_when_the_demo_is_on(client: Client, market, settings):
    from exchange.demo.seed import DEMO_LOGIN_EMAIL

    settings.DEMO = False
    assert DEMO_LOGIN_EMAIL not in client.get("/").content.decode()
    settings.DEMO = True
    body = client.get("/").content.decode()
    assert DEMO_LOGIN_EMAIL in body
    assert 'data-testid="demo-banner"' in body


def test_simulate_command_trades_through_the_order_services(market) -> None:
    call_command("simulate", "--bots", "4", "--rate", "400", "--duration", "2", "--seed", "7")
    assert Order.objects.count() > 20
    assert Trade.objects.filter(market=market).exists()
    from exchange.demo.seed import DEMO_DOMAIN

    assert not Order.objects.exclude(user__email__endswith=DEMO_DOMAIN).exists()


def test_a_self_trade_prevention_cancel_is_explained_in_words(make_user, market, fund) -> None:
    client, user = logged_in(make_user, "both")
    fund(user, cny=1000)
    fund(user, tokens=5_000_000, market=market)
    order = reverse("web:order_create", args=[SYMBOL])
    client.post(order, {"side": "sell", "type": "limit", "price": "8.00", "quantity": "1"})
    client.post(order, {"side": "buy", "type": "limit", "price": "8.00", "quantity": "1"})
    resting = Order.objects.get(user=user, side="sell")
    assert (resting.status, resting.cancel_reason) == ("cancelled", "stp")
    history = client.get(reverse("web:orders", args=[SYMBOL]), {"tab": "history"})
    body = history.content.decode()
    assert (
        "Cancelled by self-trade prevention: it would have traded with another order of yours."
    ) in body
    assert "(stp)" not in body


def test_signup_puts_the_provider_fields_apart(client: Client) -> None:
    body = client.get(reverse("accounts:signup")).content.decode()
    fieldset = body[body.index('<fieldset class="provider-fields"') : body.index("</fieldset>")]
    assert 'name="display_name"' in fieldset
    assert 'name="regions"' in fieldset
    assert body.count('name="display_name"') == 1
    assert 'name="role"' not in fieldset
