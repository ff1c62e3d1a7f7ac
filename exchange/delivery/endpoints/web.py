"""The endpoints section of the provider dashboard (``templates/web/_provider_endpoints.html``):
register and remove an endpoint. htmx posts get the section back; plain posts a redirect."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from exchange.delivery.endpoints import services
from exchange.errors import ExchangeError, NotFound
from exchange.markets.models import Market
from exchange.web.views import access_provider

SECTION = "web/_provider_endpoints.html"


class EndpointForm(forms.Form):
    market = forms.ModelChoiceField(
        label=gettext_lazy("Market"), queryset=Market.objects.order_by("symbol")
    )
    base_url = forms.URLField(
        label=gettext_lazy("Base URL (OpenAI-compatible)"),
        max_length=300,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"placeholder": "https://api.example.com/v1"}),
    )
    # render_value=False: a refused form never sends the key back to the browser.
    api_key = forms.CharField(
        label=gettext_lazy("Upstream API key (stored encrypted, never shown again)"),
        max_length=4096,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    model_id = forms.CharField(label=gettext_lazy("Upstream model id"), max_length=200)
    concurrency_limit = forms.IntegerField(
        label=gettext_lazy("Concurrency limit"),
        min_value=1,
        max_value=services.MAX_CONCURRENCY_LIMIT,
        initial=8,
    )


def _answer(
    request: HttpRequest, done: str | None, form: EndpointForm | None = None
) -> HttpResponse:
    """htmx: the section again, saying what happened; otherwise back to the dashboard."""
    if request.htmx:
        return render(request, SECTION, {"endpoint_form": form, "endpoint_done": done})
    if done:
        messages.success(request, done)
    if form is not None:
        for error in form.non_field_errors():
            messages.error(request, error)
    return redirect("web:provider")


@login_required
@require_POST
def endpoint_create_view(request: HttpRequest) -> HttpResponse:
    access_provider(request)
    form = EndpointForm(request.POST)
    if not form.is_valid():
        return _answer(request, None, form)
    try:
        endpoint = services.endpoint_create(user=request.user, **form.cleaned_data)
    except ExchangeError as error:
        form.add_error(None, error.message)
        return _answer(request, None, form)
    done = _("Endpoint for %(market)s registered: it answered and lists %(model)s.") % {
        "market": endpoint.market.symbol,
        "model": endpoint.model_id,
    }
    return _answer(request, done)


@login_required
@require_POST
def endpoint_delete_view(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    access_provider(request)
    try:
        cancelled = services.endpoint_delete(user=request.user, endpoint_id=endpoint_id)
    except NotFound as error:  # another provider's endpoint too, like a missing one
        raise Http404(str(endpoint_id)) from error
    done = _("Endpoint removed; %(count)s open ask(s) in its market cancelled.") % {
        "count": len(cancelled)
    }
    return _answer(request, done)
