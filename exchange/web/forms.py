"""Forms of the trading pages. Decimals stay strings: the order services parse them exactly."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _

from exchange.markets.models import Market

DECIMAL_PATTERN = r"^\d+(\.\d+)?$"


class DecimalText(forms.CharField):
    """A decimal typed as text (never a float); the order parser checks tick and lot."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)
        self.validators.append(
            RegexValidator(DECIMAL_PATTERN, _("Enter a decimal number such as 8.25."))
        )

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        return {
            **super().widget_attrs(widget),
            "inputmode": "decimal",
            "autocomplete": "off",
            "pattern": r"\d+(\.\d+)?",
        }


class OrderForm(forms.Form):
    side = forms.ChoiceField(
        label=_("Side"),
        choices=[("buy", _("Buy")), ("sell", _("Sell"))],
        initial="buy",
        widget=forms.RadioSelect,
    )
    type = forms.ChoiceField(
        label=_("Type"),
        choices=[("limit", _("Limit")), ("market", _("Market"))],
        initial="limit",
        widget=forms.RadioSelect,
    )
    price = DecimalText(label=_("Price per 1M tokens"), required=False)
    quantity = DecimalText(label=_("Quantity (MTok)"))
    time_in_force = forms.ChoiceField(
        label=_("Time in force"),
        choices=[
            ("GTC", _("GTC · good till cancelled")),
            ("IOC", _("IOC · immediate or cancel")),
            ("FOK", _("FOK · fill or kill")),
            ("GTD", _("GTD · good till date")),
        ],
        required=False,
        initial="GTC",
    )
    expire_time = forms.DateTimeField(
        label=_("Expires (UTC)"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    post_only = forms.BooleanField(label=_("Post only"), required=False)

    def __init__(self, *args: Any, market: Market, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.market = market
        self.fields["price"].widget.attrs["step"] = format(market.tick_size.normalize(), "f")
        self.fields["quantity"].widget.attrs["step"] = format(market.lot_size.normalize(), "f")

    def clean(self) -> dict[str, Any]:
        values = super().clean()
        if values.get("type") == "limit" and not values.get("price"):
            self.add_error("price", _("A limit order needs a price."))
        if values.get("type") == "market":
            values["post_only"] = False
            if values.get("time_in_force") not in ("IOC", "FOK"):
                values["time_in_force"] = "IOC"
        return values


class CapacityForm(forms.Form):
    market = forms.ModelChoiceField(label=_("Market"), queryset=Market.objects.order_by("symbol"))
    quantity = DecimalText(label=_("Capacity (MTok)"))
    available_until = forms.DateTimeField(
        label=_("Available until (UTC)"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    ask_price = DecimalText(
        label=_("Ask price per 1M tokens (optional: places a sell order)"), required=False
    )


class StatementForm(forms.Form):
    start = forms.DateField(label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=_("To"), widget=forms.DateInput(attrs={"type": "date"}))
