"""Words for the codes the order API speaks (status, cancel reason), shared by the templates and,
through the trade page's config, by its script: a trader reads "Cancelled: it would have traded
with your own order", not "cancelled (stp)"."""

from __future__ import annotations

from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

# "order status" context: "Open" is also a market's status, translated differently.
ORDER_STATUSES = {
    "pending": pgettext_lazy("order status", "Pending"),
    "open": pgettext_lazy("order status", "Open"),
    "partially_filled": pgettext_lazy("order status", "Partially filled"),
    "filled": pgettext_lazy("order status", "Filled"),
    "cancelled": pgettext_lazy("order status", "Cancelled"),
    "rejected": pgettext_lazy("order status", "Rejected"),
}

# The engine's reasons (exchange.engine: cancel and reject events) and the runner's "expired".
CANCEL_REASONS = {
    "user": _("Cancelled by you."),
    "expired": _("Expired: its good-till date passed."),
    "ioc": _("The unfilled rest was cancelled: immediate-or-cancel orders never rest on the book."),
    "fok": _("Cancelled: fill-or-kill could not be filled in full at once."),
    "post_only": _("Cancelled: a post-only order would have traded at once instead of resting."),
    "stp": _(
        "Cancelled by self-trade prevention: it would have traded with another order of yours."
    ),
    "invalid": _("Rejected: the order was not valid."),
    "duplicate_id": _("Rejected: the order id was already used."),
}


def order_status_text(status: str | None) -> str:
    if not status:
        return ""
    return str(ORDER_STATUSES.get(status, status))


def cancel_reason_text(reason: str | None) -> str:
    if not reason:
        return ""
    known = CANCEL_REASONS.get(reason)
    if known is None:
        return gettext("Cancelled (%(reason)s).") % {"reason": reason}
    return str(known)


def script_labels() -> dict[str, object]:
    """The same words, in the current language, for the trade page's script."""
    return {
        "status": {code: str(text) for code, text in ORDER_STATUSES.items()},
        "reason": {code: str(text) for code, text in CANCEL_REASONS.items()},
        # {quantity} and {price} are filled in by the script
        "fill_buy": gettext("Filled: bought {quantity} MTok at {price}."),
        "fill_sell": gettext("Filled: sold {quantity} MTok at {price}."),
        # an order of mine ended by the exchange, not by me: {id} and {reason} filled in
        "order_ended": gettext("Order #{id}: {reason}"),
        "spread": gettext("spread"),
        "maker": gettext("maker"),
        "taker": gettext("taker"),
    }
