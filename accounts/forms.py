from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.utils.translation import gettext_lazy as _

from accounts.models import REGION_CHOICES, SCOPE_CODES, Role

# The column's length (User.email): a longer address is a form error, not a database error.
EMAIL_MAX_LENGTH = 254
PASSWORD_MAX_LENGTH = 4096  # hashing a megabyte-long password is a denial of service


class SignUpForm(forms.Form):
    email = forms.EmailField(label=_("Email"), max_length=EMAIL_MAX_LENGTH)
    password = forms.CharField(
        label=_("Password"),
        widget=forms.PasswordInput,
        min_length=8,
        max_length=PASSWORD_MAX_LENGTH,
    )
    role = forms.ChoiceField(label=_("I want to"), choices=Role.choices, initial=Role.BUYER)
    display_name = forms.CharField(label=_("Provider display name"), required=False, max_length=80)
    regions = forms.MultipleChoiceField(
        label=_("Regions served"),
        choices=REGION_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.EmailField(
        label=_("Email"),
        max_length=EMAIL_MAX_LENGTH,
        widget=forms.EmailInput(attrs={"autofocus": True}),
    )


class ProfileForm(forms.Form):
    """The role is offered only to an approved provider; others apply (ProviderApplyForm)."""

    role = forms.ChoiceField(label=_("Role"), choices=Role.choices)
    display_name = forms.CharField(label=_("Display name"), required=False, max_length=80)
    regions = forms.MultipleChoiceField(
        label=_("Regions served"),
        choices=REGION_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    color_up_red = forms.BooleanField(label=_("Red for up, green for down"), required=False)

    def __init__(self, *args: Any, approved_provider: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not approved_provider:
            del self.fields["role"]


class ProviderApplyForm(forms.Form):
    role = forms.ChoiceField(
        label=_("I want to"),
        choices=[
            (Role.PROVIDER.value, _("sell my token capacity (provider)")),
            (Role.BOTH.value, _("both buy and sell")),
        ],
        initial=Role.BOTH,
    )
    message = forms.CharField(
        label=_("About your capacity (models, regions, volume)"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )


class ApiKeyForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=80)
    scopes = forms.MultipleChoiceField(
        label=_("Scopes"),
        choices=[(s, s) for s in SCOPE_CODES],
        widget=forms.CheckboxSelectMultiple,
        initial=["read"],
    )
    expires_at = forms.DateTimeField(
        label=_("Expires (optional, UTC)"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    # limits of a "consume" key (the /v1 gateway); empty: none
    tokens_per_day = forms.IntegerField(label=_("Tokens per day"), required=False, min_value=1)
    tokens_per_month = forms.IntegerField(label=_("Tokens per month"), required=False, min_value=1)
    requests_per_minute = forms.IntegerField(
        label=_("Requests per minute"), required=False, min_value=1
    )
    tokens_per_minute = forms.IntegerField(
        label=_("Tokens per minute"), required=False, min_value=1
    )
    allowed_models = forms.CharField(
        label=_("Allowed models (comma-separated; empty: all)"), required=False, max_length=1000
    )

    def clean_allowed_models(self) -> list[str]:
        return [m.strip() for m in self.cleaned_data["allowed_models"].split(",") if m.strip()]


class TwoFactorCodeForm(forms.Form):
    code = forms.CharField(
        label=_("Code from your authenticator app"),
        max_length=12,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )
