"""Login and signup security: the lockout page (django-axes), TOTP two-factor (django-otp), the
admin behind both, and signup that never tells whether an email is registered.

Signup: with ``SIGNUP_CONFIRM_EMAIL`` on (the default outside the demo) every valid signup gets
the same answer, "check your email". A new address gets an account that a link in that email
activates (and logs in); the owner of a registered address gets a note instead, and nothing
about that account changes. The password is hashed in both branches so the answer takes as long.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import url_has_allowed_host_and_scheme, urlencode, urlsafe_base64_encode
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _
from django_otp import user_has_device
from django_otp.admin import OTPAdminSite
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp.qr import write_qrcode_image

from accounts.forms import EmailAuthenticationForm
from accounts.models import User
from exchange.errors import Conflict, ValidationFailed

logger = logging.getLogger(__name__)


# --- lockout (django-axes) ------------------------------------------------------------------


def axes_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str:
    """One counter per account: emails are compared lower-cased, as accounts store them."""
    value = (credentials or {}).get("username") or request.POST.get("username") or ""
    return str(value).strip().lower()


def lockout_message(request: HttpRequest) -> str:
    now = timezone.now()
    # "15 minutes" in the page's language, from Django's own catalogue (plurals included)
    wait = timeuntil(now + get_cool_off(request), now)
    return _("Too many failed login attempts. Try again in %(wait)s, or reset your password.") % {
        "wait": wait
    }


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None,
    credentials: dict[str, Any] | None,
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the login page again, saying why and for how long (429)."""
    form = EmailAuthenticationForm(
        request, initial={"username": axes_username(request, credentials)}
    )
    next_url = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME, "")
    response = render(
        request,
        "accounts/login.html",
        {
            "form": form,
            "locked_message": lockout_message(request),
            "next": safe_next(request, next_url),
        },
        status=429,
    )
    response["Retry-After"] = str(int(get_cool_off(request).total_seconds()))
    return response


def safe_next(request: HttpRequest, url: str | None, default: str = "") -> str:
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return default


# --- two-factor (django-otp, TOTP) -------------------------------------------------------


def two_factor_device(user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.devices_for_user(user, confirmed=True).first()


def two_factor_device_pending(*, user: User) -> TOTPDevice:
    """The device being set up: created once, shown until a code confirms it."""
    device = TOTPDevice.objects.devices_for_user(user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="default", confirmed=False)
    return device


def two_factor_qr_data_uri(device: TOTPDevice) -> str:
    """An SVG in a data: URI: the strict CSP allows data: images, not inline markup's styles."""
    buffer = io.BytesIO()
    write_qrcode_image(device.config_url, buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def two_factor_secret(device: TOTPDevice) -> str:
    """The key as authenticator apps take it when typed (base32, in groups of four)."""
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def two_factor_verify(*, device: TOTPDevice, code: str) -> bool:
    """django-otp's check: throttled per device, each time step accepted once (no replay)."""
    code = "".join(code.split())
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().get(pk=device.pk)
        return locked.verify_token(code)


def two_factor_confirm(*, device: TOTPDevice, code: str) -> bool:
    if not two_factor_verify(device=device, code=code):
        return False
    TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
    TOTPDevice.objects.filter(user_id=device.user_id, confirmed=False).delete()
    device.refresh_from_db()
    return True


def two_factor_disable(*, user: User) -> None:
    TOTPDevice.objects.filter(user=user).delete()


class TwoFactorAdminSite(OTPAdminSite):
    """The admin, for staff verified by a TOTP device in this session (OTPAdminSite), with one
    login: the site's (throttled, then the code). Staff without a device are sent to set one up."""

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        next_url = safe_next(
            request,
            request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME),
            default=reverse("admin:index", current_app=self.name),
        )
        query = urlencode({REDIRECT_FIELD_NAME: next_url})
        user = request.user
        if not user.is_authenticated:
            return redirect(f"{reverse('accounts:login')}?{query}")
        if not (user.is_active and user.is_staff):
            raise PermissionDenied
        if user.is_verified():
            return redirect(next_url)
        if user_has_device(user):
            return redirect(f"{reverse('accounts:login_verify')}?{query}")
        return redirect(f"{reverse('accounts:two_factor')}?{query}")


# --- signup without enumeration, account email ---------------------------------------------


class SignupOutcome(NamedTuple):
    user: User | None  # the new (inactive) account; None when the email was registered


def _link(request: HttpRequest, name: str, user: User) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return request.build_absolute_uri(reverse(name, kwargs={"uidb64": uid, "token": token}))


def signup_request(
    *,
    request: HttpRequest,
    email: str,
    password: str,
    role: str,
    display_name: str = "",
    regions: Iterable[str] = (),
) -> SignupOutcome:
    """Create an inactive account and email its activation link, or tell a registered email's
    owner that someone tried to sign up with it. The caller answers the same either way.

    An address whose account was never activated gets the new password and a new link: only
    whoever reads that mailbox can activate it, and the new password makes the older links
    invalid (the token covers the password hash), so nobody can park an account on another
    person's address."""
    from accounts.services import user_create

    email = email.strip().lower()
    # The password rules first, for every address: a weak password refused only for new
    # addresses would tell which ones are registered.
    try:
        validate_password(password, User(email=email))
    except DjangoValidationError as error:
        raise ValidationFailed(" ".join(error.messages)) from error
    existing = User.objects.filter(email=email).first()
    if existing is not None and not existing.is_active and existing.last_login is None:
        existing.set_password(password)
        existing.save(update_fields=["password"])
        _send_activation_email_now(request=request, user=existing)
        return SignupOutcome(user=existing)
    if existing is None:
        try:
            with transaction.atomic():
                user = user_create(
                    email=email,
                    password=password,
                    role=role,
                    display_name=display_name,
                    regions=regions,
                )
                User.objects.filter(pk=user.pk).update(is_active=False)
                user.is_active = False
        except Conflict:
            existing = User.objects.get(email=email)  # a concurrent signup won the race
        else:
            _send_activation_email_now(request=request, user=user)
            return SignupOutcome(user=user)
    # As slow as creating an account (the password hash dominates), so timing tells nothing.
    make_password(password)
    _send_already_registered_email_now(request=request, user=existing)
    return SignupOutcome(user=None)


def signup_activate(*, user: User, token: str) -> bool:
    """Activate an account from its link. The token covers last_login, so a link works once."""
    if user.is_active or not default_token_generator.check_token(user, token):
        return False
    User.objects.filter(pk=user.pk).update(is_active=True)
    user.is_active = True
    return True


def _send_activation_email_now(*, request: HttpRequest, user: User) -> None:
    context = {"link": _link(request, "accounts:signup_confirm", user), "email": user.email}
    _send_now(
        user,
        "accounts/email/signup_confirm_subject.txt",
        "accounts/email/signup_confirm.txt",
        context,
    )


def _send_already_registered_email_now(*, request: HttpRequest, user: User) -> None:
    context = {
        "email": user.email,
        "login": request.build_absolute_uri(reverse("accounts:login")),
        "reset": request.build_absolute_uri(reverse("accounts:password_reset")),
    }
    _send_now(
        user,
        "accounts/email/signup_existing_subject.txt",
        "accounts/email/signup_existing.txt",
        context,
    )


def _send_now(
    user: User, subject_template: str, body_template: str, context: dict[str, Any]
) -> None:
    subject = "".join(render_to_string(subject_template, context).splitlines())
    body = render_to_string(body_template, context)
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [user.email])
    except OSError:
        # The answer must not differ (nor fail) when mail is down: log it for the operators.
        logger.exception("account email to user %s not sent", user.pk)
