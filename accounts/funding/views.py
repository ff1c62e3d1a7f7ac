"""Funding web pages: deposits (Stripe Checkout) and provider payouts (Connect + withdrawals)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods

from accounts.audit import actor_from_request, audit_withdrawal
from accounts.funding import services, stripe_gateway
from accounts.funding.selectors import connected_account_get, deposit_list, withdrawal_list
from accounts.models import Profile
from exchange.demo.funds import (
    DemoFundsAlreadyGranted,
    DemoGrant,
    demo_funds_grant,
    demo_funds_granted_today,
    demo_funds_offer,
)
from exchange.errors import ExchangeError
from exchange.ledger.units import amount_display
from exchange.markets.currencies import currency_choices
from exchange.web.templatetags.web import money


class AmountForm(forms.Form):
    currency = forms.ChoiceField(label=gettext_lazy("Currency"), choices=currency_choices)
    amount = forms.DecimalField(
        label=gettext_lazy("Amount"), min_value=0, max_digits=14, decimal_places=2
    )


def _with_amounts(rows: Any) -> list[Any]:
    """The rows, each with ``amount_text`` (and ``reversed_text``) in currency units."""
    result = list(rows)
    for row in result:
        row.amount_text = amount_display(row.currency, row.amount)
        if hasattr(row, "reversed_amount"):
            row.reversed_text = amount_display(row.currency, row.reversed_amount)
    return result


def _profile(request: HttpRequest) -> Profile:
    profile, _created = Profile.objects.get_or_create(user=request.user)
    return profile


@login_required
@require_http_methods(["GET", "POST"])
def deposits(request: HttpRequest) -> HttpResponse:
    enabled = stripe_gateway.is_enabled()
    form = AmountForm(request.POST or None)
    if request.method == "POST" and enabled and form.is_valid():
        page = request.build_absolute_uri(reverse("funding:deposits"))
        try:
            deposit = services.deposit_create(
                user=request.user,
                currency=form.cleaned_data["currency"],
                amount=form.cleaned_data["amount"],
                success_url=page,
                cancel_url=page,
            )
        except ExchangeError as error:
            form.add_error(None, error.message)
        else:
            return redirect(deposit.checkout_url)
    context = {
        "enabled": enabled,
        "form": form,
        "profile": _profile(request),
        "deposits": _with_amounts(deposit_list(user=request.user)[:100]),
        "returned": request.GET.get("deposit"),
        "support_email": settings.SUPPORT_EMAIL,
    }
    if settings.DEMO:
        context["demo_offer"] = _amounts_text(demo_funds_offer())
        context["demo_granted_today"] = demo_funds_granted_today(user=request.user)
    return render(request, "accounts/funding/deposits.html", context)


def _amounts_text(grants: list[DemoGrant]) -> str:
    """The amounts as people read them in the page's language (10,000.00 CNY and 1,500.00 USD)."""
    return _(" and ").join(
        f"{money(amount_display(g.currency, g.amount), g.currency)} {g.currency}" for g in grants
    )


@login_required
@require_http_methods(["POST"])
def demo_funds(request: HttpRequest) -> HttpResponse:
    """POST (CSRF-checked): today's demo funds, then back to the page the form was on."""
    if not settings.DEMO:
        raise Http404
    try:
        granted = demo_funds_grant(user=request.user)
    except DemoFundsAlreadyGranted:
        messages.info(
            request, _("You have had today's demo funds. More are available tomorrow (UTC).")
        )
    except ExchangeError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            _("%(amounts)s of demo funds added to your account.")
            % {"amounts": _amounts_text(granted)},
        )
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("funding:deposits")
    return redirect(target)


@login_required
@require_http_methods(["GET", "POST"])
def payouts(request: HttpRequest) -> HttpResponse:
    enabled = stripe_gateway.is_enabled()
    form = AmountForm(request.POST or None)
    if request.method == "POST" and enabled and form.is_valid():
        try:
            withdrawal = services.withdrawal_request(
                user=request.user,
                currency=form.cleaned_data["currency"],
                amount=form.cleaned_data["amount"],
            )
            audit_withdrawal(withdrawal, actor=actor_from_request(request))
        except ExchangeError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, _("Withdrawal requested; the amount is held until paid."))
            return redirect("funding:payouts")
    context = {
        "enabled": enabled,
        "form": form,
        "profile": _profile(request),
        "account": connected_account_get(user=request.user),
        "withdrawals": _with_amounts(withdrawal_list(user=request.user)[:100]),
    }
    return render(request, "accounts/funding/payouts.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def connect(request: HttpRequest) -> HttpResponse:
    """POST: start Express onboarding. GET: Stripe's refresh_url, for an account that exists."""
    if request.method == "GET" and connected_account_get(user=request.user) is None:
        return redirect("funding:payouts")
    try:
        url = services.connect_onboarding_link(
            user=request.user,
            refresh_url=request.build_absolute_uri(reverse("funding:connect")),
            return_url=request.build_absolute_uri(reverse("funding:connect_return")),
        )
    except ExchangeError as error:
        messages.error(request, error.message)
        return redirect("funding:payouts")
    return redirect(url)


@login_required
def connect_return(request: HttpRequest) -> HttpResponse:
    try:
        account = services.connected_account_refresh(user=request.user)
    except ExchangeError as error:
        messages.error(request, error.message)
    else:
        if account is not None and account.payouts_enabled:
            messages.success(request, _("Your Stripe account is connected and can be paid."))
        elif account is not None:
            messages.info(request, _("Stripe still needs some details before paying you."))
    return redirect("funding:payouts")
