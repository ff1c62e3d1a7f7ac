from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.audit import actor_from_request, audit_list
from accounts.forms import ApiKeyForm, ProfileForm, ProviderApplyForm
from accounts.models import ApplicationStatus, Profile
from accounts.onboarding import provider_application_current, provider_apply
from accounts.selectors import api_key_list
from accounts.services import LIMIT_FIELDS, api_key_create, api_key_revoke, profile_update
from exchange.errors import ExchangeError


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    current, _created = Profile.objects.get_or_create(user=request.user)
    application = provider_application_current(user=request.user)
    approved = application is not None and application.status == ApplicationStatus.APPROVED
    form = ProfileForm(
        request.POST or None,
        approved_provider=approved,
        initial={
            "role": current.role,
            "display_name": current.display_name,
            "regions": current.regions,
            "color_up_red": current.color_up_red,
        },
    )
    if request.method == "POST" and form.is_valid():
        try:
            profile_update(user=request.user, **form.cleaned_data)
        except ExchangeError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, _("Profile saved."))
            return redirect("accounts:profile")
    return render(
        request,
        "accounts/profile.html",
        {
            "form": form,
            "profile": current,
            "application": application,
            "apply_form": None if approved else ProviderApplyForm(),
        },
    )


@login_required
@require_POST
def provider_apply_view(request: HttpRequest) -> HttpResponse:
    form = ProviderApplyForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(m for errors in form.errors.values() for m in errors))
        return redirect("accounts:profile")
    try:
        provider_apply(
            user=request.user,
            role=form.cleaned_data["role"],
            message=form.cleaned_data["message"],
        )
    except ExchangeError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, _("Your application is sent; staff will review it."))
    return redirect("accounts:profile")


AUDIT_ON_PAGE = 20  # the newest; the rest through GET /api/v1/audit-log


@login_required
def api_keys(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    new_secret = None
    if request.method == "POST" and form.is_valid():
        try:
            created = api_key_create(
                user=request.user,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.cleaned_data.get("expires_at"),
                limits={
                    field: form.cleaned_data.get(field)
                    for field in (*LIMIT_FIELDS, "allowed_models")
                },
                actor=actor_from_request(request),
            )
        except ExchangeError as error:
            form.add_error(None, error.message)
        else:
            new_secret = created.secret
            form = ApiKeyForm()
    return render(
        request,
        "accounts/api_keys.html",
        {
            "form": form,
            "keys": api_key_list(user=request.user),
            "new_secret": new_secret,
            "audit_events": audit_list(user=request.user)[:AUDIT_ON_PAGE],
        },
    )


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, key_id: int) -> HttpResponse:
    try:
        api_key_revoke(user=request.user, key_id=key_id, actor=actor_from_request(request))
    except ExchangeError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, _("API key revoked."))
    return redirect("accounts:api_keys")
