"""Signup, login (password, then the TOTP code), two-factor setup and password reset pages.

The rules behind them (lockout, enumeration, the admin) are in accounts.login_security.
"""

import time

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import REDIRECT_FIELD_NAME, login, user_login_failed
from django.contrib.auth.decorators import login_required
from django.contrib.auth.tokens import default_token_generator
from django.contrib.auth.views import (
    LoginView,
    LogoutView,
    PasswordResetCompleteView,
    PasswordResetConfirmView,
    PasswordResetDoneView,
    PasswordResetView,
)
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.encoding import force_str
from django.utils.http import urlencode, urlsafe_base64_decode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_otp import login as otp_login

from accounts import login_security
from accounts.forms import EmailAuthenticationForm, SignUpForm, TwoFactorCodeForm
from accounts.models import User
from accounts.services import user_create
from exchange.errors import ExchangeError

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        fields = {
            "email": form.cleaned_data["email"],
            "password": form.cleaned_data["password"],
            "role": form.cleaned_data["role"],
            "display_name": form.cleaned_data["display_name"],
            "regions": form.cleaned_data["regions"],
        }
        if settings.SIGNUP_CONFIRM_EMAIL:
            # The same answer whether or not the email is registered (login_security).
            try:
                login_security.signup_request(request=request, **fields)
            except ExchangeError as error:  # the password rules: the same for any email
                form.add_error(None, error.message)
            else:
                return redirect("accounts:signup_done")
        else:
            # The demo: a newcomer is in at once (and told when an email is taken).
            try:
                user = user_create(**fields)
            except ExchangeError as error:
                form.add_error(None, error.message)
            else:
                login(request, user, backend=MODEL_BACKEND)
                messages.success(request, _("Welcome! Your account is ready."))
                return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


def signup_done(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/signup_done.html")


def _user_from_link(uidb64: str) -> User | None:
    try:
        return User.objects.get(pk=int(force_str(urlsafe_base64_decode(uidb64))))
    except (ValueError, TypeError, OverflowError, User.DoesNotExist):
        return None


def signup_confirm(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """GET shows a button, POST activates: mail scanners that fetch links activate nothing."""
    user = _user_from_link(uidb64)
    if user is not None and request.method == "POST":
        if login_security.signup_activate(user=user, token=token):
            login(request, user, backend=MODEL_BACKEND)
            messages.success(request, _("Welcome! Your account is ready."))
            return redirect("home")
    elif (
        user is not None and not user.is_active and default_token_generator.check_token(user, token)
    ):
        return render(request, "accounts/signup_confirm.html")
    return render(request, "accounts/link_invalid.html", status=400)


# A password step whose account has a TOTP device waits this long for the code.
TWO_FACTOR_PENDING_KEY = "two_factor_pending"
TWO_FACTOR_PENDING_SECONDS = 300


class EmailLoginView(LoginView):
    """Email and password (throttled by django-axes); then the TOTP code when the account has a
    device; staff without one are sent to set it up."""

    template_name = "accounts/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True

    def form_valid(self, form: EmailAuthenticationForm) -> HttpResponse:
        user = form.get_user()
        if login_security.two_factor_device(user) is not None:
            # Not logged in yet: the session only remembers who passed the password step.
            self.request.session[TWO_FACTOR_PENDING_KEY] = {
                "user_id": user.pk,
                "backend": user.backend,
                "next": self.get_success_url(),
                "until": time.time() + TWO_FACTOR_PENDING_SECONDS,
            }
            return redirect("accounts:login_verify")
        response = super().form_valid(form)
        if user.is_staff:
            messages.warning(
                self.request, _("Staff accounts need two-factor authentication: set it up now.")
            )
            query = urlencode({REDIRECT_FIELD_NAME: self.get_success_url()})
            return redirect(f"{reverse('accounts:two_factor')}?{query}")
        return response


def _pending_login(request: HttpRequest) -> tuple[User, str | None, str] | None:
    """Who is to give a code: the password step's user, or a logged-in user whose session is not
    verified yet (e.g. staff on the way to the admin). (user, backend or None, next)"""
    pending = request.session.get(TWO_FACTOR_PENDING_KEY)
    if pending and pending["until"] > time.time():
        user = User.objects.filter(pk=pending["user_id"], is_active=True).first()
        if user is not None:
            return user, pending["backend"], pending["next"]
    if request.user.is_authenticated and not request.user.is_verified():
        next_url = login_security.safe_next(
            request,
            request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME),
            default=reverse(settings.LOGIN_REDIRECT_URL),
        )
        return request.user, None, next_url
    return None


def login_verify(request: HttpRequest) -> HttpResponse:
    pending = _pending_login(request)
    device = login_security.two_factor_device(pending[0]) if pending else None
    if pending is None or device is None:
        request.session.pop(TWO_FACTOR_PENDING_KEY, None)
        return redirect("accounts:login")
    user, backend, next_url = pending
    credentials = {"username": user.email}
    form = TwoFactorCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if AxesProxyHandler.is_locked(request, credentials):
            return login_security.lockout_response(request, None, credentials)
        if login_security.two_factor_verify(device=device, code=form.cleaned_data["code"]):
            request.session.pop(TWO_FACTOR_PENDING_KEY, None)
            if backend is not None:
                login(request, user, backend=backend)
            otp_login(request, device)
            return redirect(next_url)
        # A wrong code counts as a failed login: the same lockout as wrong passwords (the
        # AxesMiddleware answers with the lockout page once the limit is reached).
        user_login_failed.send(sender=__name__, credentials=credentials, request=request)
        form.add_error("code", _("That code is wrong or was already used. Try the next one."))
    return render(request, "accounts/login_verify.html", {"form": form, "next": next_url})


class SiteLogoutView(LogoutView):
    pass


@login_required
def two_factor(request: HttpRequest) -> HttpResponse:
    """Set up TOTP: scan the code (or type the key), then confirm with one code from the app."""
    next_url = login_security.safe_next(
        request,
        request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME),
        default=reverse("accounts:profile"),
    )
    form = TwoFactorCodeForm(request.POST or None)
    if login_security.two_factor_device(request.user) is not None:
        context = {"enabled": True, "form": TwoFactorCodeForm(), "next": next_url}
        return render(request, "accounts/two_factor.html", context)
    pending = login_security.two_factor_device_pending(user=request.user)
    if request.method == "POST" and form.is_valid():
        if login_security.two_factor_confirm(device=pending, code=form.cleaned_data["code"]):
            otp_login(request, pending)
            messages.success(request, _("Two-factor authentication is on."))
            return redirect(next_url)
        form.add_error("code", _("That code is wrong. Check the time on your phone and retry."))
    return render(
        request,
        "accounts/two_factor.html",
        {
            "enabled": False,
            "form": form,
            "next": next_url,
            "qr": login_security.two_factor_qr_data_uri(pending),
            "secret": login_security.two_factor_secret(pending),
        },
    )


@login_required
@require_POST
def two_factor_disable(request: HttpRequest) -> HttpResponse:
    if request.user.is_staff:
        raise PermissionDenied  # required for staff: the admin is reachable only with it
    device = login_security.two_factor_device(request.user)
    if device is None:
        return redirect("accounts:profile")
    form = TwoFactorCodeForm(request.POST)
    if form.is_valid() and login_security.two_factor_verify(
        device=device, code=form.cleaned_data["code"]
    ):
        login_security.two_factor_disable(user=request.user)
        messages.success(request, _("Two-factor authentication is off."))
        return redirect("accounts:profile")
    form.add_error("code", _("That code is wrong. Two-factor authentication stays on."))
    context = {"enabled": True, "form": form, "next": reverse("accounts:profile")}
    return render(request, "accounts/two_factor.html", context)


class SitePasswordResetView(PasswordResetView):
    """Django's: the same answer for any address; mail only to an active account's."""

    template_name = "accounts/password_reset_form.html"
    email_template_name = "accounts/email/password_reset.txt"
    subject_template_name = "accounts/email/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password_reset_done")


class SitePasswordResetDoneView(PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class SitePasswordResetConfirmView(PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password_reset_complete")


class SitePasswordResetCompleteView(PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"
