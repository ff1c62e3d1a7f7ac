"""The trading pages: markets, trade (one per market), provider dashboard, buyer portfolio.

Views parse input, call one service or selector, and render; htmx requests get the template
partial they target (``request.htmx``), plain requests the whole page.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Profile
from accounts.onboarding import ProviderNotApproved, provider_require_approved
from exchange.errors import ExchangeError, NotFound
from exchange.ledger.selectors import (
    asset_codes_public,
    balance_get,
    balance_list,
    posting_list,
)
from exchange.ledger.units import amount_display
from exchange.marketdata.selectors import book_public, ticker_get, trades_recent
from exchange.markets.models import Market
from exchange.markets.selectors import market_get, market_list
from exchange.web import delivery_selectors
from exchange.web.forms import CapacityForm, OrderForm, StatementForm
from exchange.web.labels import script_labels
from orders.api import fill_json, order_json
from orders.capacity import allocation_list_json, capacity_list, listing_list, listings_json
from orders.models import OPEN_STATUSES, Order, Trade
from orders.selectors import fill_list, order_list
from orders.services import (
    order_cancel,
    order_cancel_all,
    order_place,
    order_request_parse,
    order_wait,
)

ORDERS_SHOWN = 50
TABS = ("open", "history", "fills")


# --- access -------------------------------------------------------------------------------------
def access_profile(request: HttpRequest) -> Profile:
    profile, _created = Profile.objects.get_or_create(user=request.user)
    return profile


def access_provider(request: HttpRequest) -> Profile:
    """The logged-in provider's profile; buyers get 403 (saying where their application is)."""
    profile = access_profile(request)
    if not profile.is_provider:
        try:
            provider_require_approved(user=request.user)
        except ProviderNotApproved as error:
            raise PermissionDenied(error.message) from error
        raise PermissionDenied(_("This page is for providers."))
    return profile


def access_market(symbol: str) -> Market:
    try:
        return market_get(symbol=symbol)
    except (NotFound, Market.DoesNotExist) as error:
        from django.http import Http404

        raise Http404(symbol) from error


# --- markets ------------------------------------------------------------------------------------
@require_GET
def markets(request: HttpRequest) -> HttpResponse:
    return render(request, "exchange/home.html", {"markets": market_list()})


# --- trade --------------------------------------------------------------------------------------
def _trade_context(request: HttpRequest, market: Market) -> dict[str, Any]:
    ticker = ticker_get(market=market)
    book = book_public(market=market, depth=20)
    context: dict[str, Any] = {
        "market": market,
        "markets": market_list(),
        "ticker": ticker,
        "book": book,
        "asks_desc": list(reversed(book["asks"])),
        "trades": trades_recent(market=market, limit=40),
        "intervals": ["1m", "5m", "15m", "1h", "4h", "1d"],
        "form": OrderForm(market=market),
        "maker_fee_pct": format((market.maker_fee_rate * 100).normalize(), "f"),
        "taker_fee_pct": format((market.taker_fee_rate * 100).normalize(), "f"),
        "config": {
            "symbol": market.symbol,
            "quote": market.quote_currency,
            "tick": format(market.tick_size.normalize(), "f"),
            "lot": format(market.lot_size.normalize(), "f"),
            "min_quantity": format(market.min_quantity.normalize(), "f"),
            "maker_fee": format(market.maker_fee_rate.normalize(), "f"),
            "taker_fee": format(market.taker_fee_rate.normalize(), "f"),
            "quote_decimals": market.quote_decimals,
            "tokens_per_lot": market.tokens_per_lot,
            "logged_in": request.user.is_authenticated,
            "labels": script_labels(),
            "urls": {
                "candles": reverse("market-candles", args=[market.symbol]),
                "book": reverse("market-book", args=[market.symbol]),
            },
        },
    }
    if request.user.is_authenticated:
        context.update(_balances_context(request, market))
        context.update(_orders_context(request, market, "open"))
    return context


def trade(request: HttpRequest, symbol: str) -> HttpResponse:
    market = access_market(symbol)
    return render(request, "web/trade.html", _trade_context(request, market))


def _balances_context(request: HttpRequest, market: Market) -> dict[str, Any]:
    quote = balance_get(user=request.user, asset=market.quote_currency)
    tokens = balance_get(user=request.user, asset=market.symbol)
    return {
        "quote_balance": {
            "asset": market.quote_currency,
            "available": amount_display(market.quote_currency, quote.available),
            "held": amount_display(market.quote_currency, quote.held),
            "units": quote.available,
        },
        "token_balance": {
            # the asset's code as the API's balances give it (the market's base, usually)
            "asset": asset_codes_public().get(market.symbol, market.symbol),
            "available": amount_display(market.symbol, tokens.available),
            "held": amount_display(market.symbol, tokens.held),
            "tokens": tokens.available,
        },
    }


@login_required
@require_GET
def balances_panel(request: HttpRequest, symbol: str) -> HttpResponse:
    market = access_market(symbol)
    context = {"market": market, **_balances_context(request, market)}
    return render(request, "web/trade.html#balances", context)


def _orders_context(request: HttpRequest, market: Market, tab: str) -> dict[str, Any]:
    if tab == "fills":
        rows = [
            fill_json(t, request.user.id)
            for t in fill_list(user=request.user, market=market)[:ORDERS_SHOWN]
        ]
    else:
        status = "open" if tab == "open" else "closed"
        orders = order_list(user=request.user, market=market, status=status)
        rows = [order_json(o) for o in orders.select_related("market")[:ORDERS_SHOWN]]
    return {"tab": tab, "rows": rows, "market": market, "tabs": TABS}


@login_required
@require_GET
def orders_panel(request: HttpRequest, symbol: str) -> HttpResponse:
    market = access_market(symbol)
    tab = request.GET.get("tab", "open")
    if tab not in TABS:
        tab = "open"
    return render(request, "web/trade.html#orders", _orders_context(request, market, tab))


def _order_result(request: HttpRequest, market: Market, context: dict[str, Any]) -> HttpResponse:
    response = render(request, "web/trade.html#order-result", {"market": market, **context})
    response["HX-Trigger"] = "orders-changed"
    return response


@login_required
@require_POST
def order_create(request: HttpRequest, symbol: str) -> HttpResponse:
    market = access_market(symbol)
    form = OrderForm(request.POST, market=market)
    if not form.is_valid():
        errors = "; ".join(str(e) for field in form.errors.values() for e in field)
        if not request.htmx:
            messages.error(request, errors)
            return redirect("web:trade", symbol=market.symbol)
        return _order_result(request, market, {"error": errors})
    values = form.cleaned_data
    try:
        parsed = order_request_parse(
            market=market,
            side=values["side"],
            type=values["type"],
            price=values["price"] if values["type"] == "limit" else None,
            quantity=values["quantity"],
            time_in_force=values["time_in_force"] or None,
            expire_time=values.get("expire_time"),
            post_only=values["post_only"],
        )
        order, _created = order_place(user=request.user, request=parsed)
        order = order_wait(order=order, timeout=settings.ORDER_WAIT_SECONDS)
    except ExchangeError as error:
        if not request.htmx:
            messages.error(request, error.message)
            return redirect("web:trade", symbol=market.symbol)
        return _order_result(request, market, {"error": error.message})
    result = order_json(order)
    if not request.htmx:
        messages.success(request, _("Order %(id)s placed.") % {"id": order.id})
        return redirect("web:trade", symbol=market.symbol)
    return _order_result(request, market, {"order": result})


def _wait_closed(order: Order) -> Order:
    """Give the runner a moment to apply the cancel so the refreshed table shows it."""
    deadline = time.monotonic() + settings.ORDER_WAIT_SECONDS
    order.refresh_from_db()
    while order.status in OPEN_STATUSES and time.monotonic() < deadline:
        time.sleep(0.02)
        order.refresh_from_db()
    return order


@login_required
@require_POST
def order_cancel_view(request: HttpRequest, order_id: int) -> HttpResponse:
    try:
        order = order_cancel(user=request.user, order_id=order_id)
    except ExchangeError as error:
        messages.error(request, error.message)
        market = Order.objects.filter(user=request.user, id=order_id).first()
        symbol = market.market.symbol if market else None
    else:
        order = _wait_closed(order)
        symbol = order.market.symbol
    if symbol is None:
        return redirect("home")
    if not request.htmx:
        return redirect("web:trade", symbol=symbol)
    market = access_market(symbol)
    response = render(request, "web/trade.html#orders", _orders_context(request, market, "open"))
    response["HX-Trigger"] = "balances-changed"
    return response


@login_required
@require_POST
def order_cancel_all_view(request: HttpRequest, symbol: str) -> HttpResponse:
    market = access_market(symbol)
    ids = order_cancel_all(user=request.user, market=market)
    for order in Order.objects.filter(id__in=ids):
        _wait_closed(order)
    if not request.htmx:
        messages.success(request, _("%(count)s orders cancelled.") % {"count": len(ids)})
        return redirect("web:trade", symbol=market.symbol)
    response = render(request, "web/trade.html#orders", _orders_context(request, market, "open"))
    response["HX-Trigger"] = "balances-changed"
    return response


# --- provider -----------------------------------------------------------------------------------
def _with_markets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row (keyed by market symbol) with its market, whose tick and lot format its numbers."""
    markets = {market.symbol: market for market in market_list()}
    return [{**row, "unit": markets[row["market"]]} for row in rows]


LISTINGS_PER_PAGE = 50


def _provider_context(request: HttpRequest, form: CapacityForm | None = None) -> dict[str, Any]:
    sales = Trade.objects.filter(seller=request.user).select_related("market").order_by("-id")[:50]
    # a page of listings, newest first, their figures in one query (#16 finding 4)
    listings_page = Paginator(listing_list(user=request.user), LISTINGS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return {
        "form": form or CapacityForm(),
        "listings": _with_markets(listings_json(list(listings_page.object_list))),
        "listings_page": listings_page,
        "sales": _with_markets([fill_json(trade, request.user.id) for trade in sales]),
    }


@login_required
def provider(request: HttpRequest) -> HttpResponse:
    access_provider(request)
    form = CapacityForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        values = form.cleaned_data
        try:
            listing = capacity_list(
                user=request.user,
                market=values["market"],
                quantity=values["quantity"],
                available_until=values["available_until"],
                ask_price=values["ask_price"] or None,
            )
        except ExchangeError as error:
            form.add_error(None, error.message)
        else:
            messages.success(
                request,
                _("Listed %(quantity)s MTok of %(market)s.")
                % {"quantity": values["quantity"], "market": listing.market.symbol},
            )
            form = CapacityForm()
    context = _provider_context(request, form)
    if request.htmx:
        return render(request, "web/provider.html#dashboard", context)
    return render(request, "web/provider.html", context)


# --- portfolio ----------------------------------------------------------------------------------
@login_required
@require_GET
def portfolio(request: HttpRequest) -> HttpResponse:
    from accounts.funding.selectors import deposit_list

    today = timezone.now().date()
    markets = {market.symbol: market for market in market_list()}
    statement = StatementForm(
        request.GET or None, initial={"start": today - timedelta(days=30), "end": today}
    )
    codes = asset_codes_public()  # token assets by their market's base, as the API shows them
    balances = [
        {
            "asset": codes.get(b.asset, b.asset),
            "kind": b.kind,
            "unit": markets.get(b.asset, b.asset),
            "available": amount_display(b.asset, b.available),
            "held": amount_display(b.asset, b.held),
            "total": amount_display(b.asset, b.total),
        }
        for b in balance_list(user=request.user)
    ]
    postings = list(posting_list(user=request.user)[:30])
    for posting in postings:
        posting.amount_text = amount_display(posting.asset_id, posting.amount)
        posting.unit = markets.get(posting.asset_id, posting.asset_id)
        posting.asset_code = codes.get(posting.asset_id, posting.asset_id)
    deposits = list(deposit_list(user=request.user)[:20])
    for deposit in deposits:
        deposit.amount_text = amount_display(deposit.currency, deposit.amount)
    context = {
        "balances": balances,
        "allocations": _with_markets(allocation_list_json(user=request.user)),
        "postings": postings,
        "deposits": deposits,
        "statement": statement,
        "statement_start": (today - timedelta(days=30)).isoformat(),
        "statement_end": today.isoformat(),
    }
    return render(request, "web/portfolio.html", context)


# --- use: the buyer's playground ----------------------------------------------------------------
PLAYGROUND_MAX_TOKENS = 256  # a reply's default cap: the worst case reserved from the lots


@login_required
@require_GET
def use(request: HttpRequest) -> HttpResponse:
    """The Use page: a chat playground on the gateway (``/v1``, with this session), the buyer's
    lots of deliverable markets, and the same call from Python. htmx asks for the lots table
    alone after each reply."""
    from django.middleware.csrf import get_token

    from exchange.delivery.escrow.selectors import model_pairs

    pairs = model_pairs()
    lots = _with_markets(delivery_selectors.use_lots(user=request.user, pairs=pairs))
    if request.htmx:
        return render(request, "web/use.html#allocations", {"lots": lots})
    models = delivery_selectors.use_models(user=request.user)
    # a reply needs both: prompt tokens from the input market, completion from the output one
    usable = [m for m in models if all(m["available"].values())]
    ids = [model["id"] for model in usable] + [model["id"] for model in models]
    asked = request.GET.get("model", "")
    model = asked if asked in ids else (ids[0] if ids else (pairs[0].model_id if pairs else ""))
    context = {
        "models": models,
        "usable": bool(usable),
        "pairs": pairs,
        "lots": lots,
        "base_url": request.build_absolute_uri("/v1"),
        "config": {
            "model": model,
            "max_tokens": PLAYGROUND_MAX_TOKENS,
            "csrf_token": get_token(request),
            "urls": {
                "chat": "/v1/chat/completions",
                "models": "/v1/models",
                "generations": reverse("generations"),
                "trade": reverse("web:trade", args=["SYMBOL"]),
            },
            "labels": {
                "sla_met": _("met"),
                "sla_missed": _("missed"),
                "estimated": _("counted by the exchange: the provider reported no usage"),
                "available": _(
                    "Available: {input} input and {output} output tokens from {providers} "
                    "provider(s); first lot expires {expiry} UTC."
                ),
                "missing": _("You hold no {kind} tokens of this model left: buy some on"),
                "input": _("input"),
                "output": _("output"),
                "stopped": _("Stopped."),
                "network": _("The connection to the exchange failed."),
            },
        },
    }
    return render(request, "web/use.html", context)
