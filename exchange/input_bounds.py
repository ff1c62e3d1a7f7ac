"""Bounds on what a client sends, checked at the edge: every bad input is a clear 4xx.

- Decimals (prices, quantities, amounts) are parsed with bounds *before* any arithmetic: at most
  ``DECIMAL_MAX_CHARACTERS`` characters, ``DECIMAL_MAX_DIGITS`` significant digits and a
  magnitude between 1e-``DECIMAL_MAX_SCALE`` and 1e``DECIMAL_MAX_MAGNITUDE``. ``1e999999``
  overflowed the division by the tick size (500) and ``1e-1000100`` underflowed to a zero price
  that only the database's CHECK stopped; within these bounds every later step is exact.
- NUL and other control characters: ``exchange.input_edge`` (URLs and JSON bodies).
- Dates a client names are bounded (``date_bounds_check``): a statement ending 9999-12-31 made
  "the day after" overflow.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation

from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy

from exchange.errors import ValidationFailed

DECIMAL_MAX_CHARACTERS = 64
DECIMAL_MAX_DIGITS = 40
DECIMAL_MAX_MAGNITUDE = 24  # below 1e25
DECIMAL_MAX_SCALE = 30  # nothing finer than 1e-30

# Dates clients name (statements, filters): none before the exchange could exist, none past
# the range where "the day after" is still a date.
DATE_MIN = date(2000, 1, 1)
DATE_MAX = date(9998, 12, 31)


def _not_decimal(field: str) -> object:
    return format_lazy(gettext_lazy("{field} must be a decimal string."), field=field)


def decimal_parse(value: object, *, field: str) -> Decimal:
    """A client's decimal (a string, or an int) within the bounds above; ``ValidationFailed``
    (400 ``invalid``, details ``{field: invalid | out_of_range}``) otherwise."""
    if isinstance(value, float | bool) or not isinstance(value, str | int | Decimal):
        raise ValidationFailed(_not_decimal(field), details={field: "invalid"})
    text = str(value).strip() if not isinstance(value, Decimal) else None
    if text is not None and len(text) > DECIMAL_MAX_CHARACTERS:
        raise _out_of_range(field)
    try:
        number = value if isinstance(value, Decimal) else Decimal(text or "")
    except InvalidOperation as error:
        raise ValidationFailed(_not_decimal(field), details={field: "invalid"}) from error
    if not number.is_finite():
        raise ValidationFailed(
            format_lazy(gettext_lazy("{field} must be finite."), field=field),
            details={field: "invalid"},
        )
    return decimal_bounds_check(number, field=field)


def decimal_bounds_check(number: Decimal, *, field: str) -> Decimal:
    """``number`` (finite) within the bounds, or ``ValidationFailed`` ``out_of_range``."""
    if number:
        # from the digits alone: normalize() and friends round to the context (1e-1000100
        # "normalizes" to 0), which is the arithmetic these bounds must come before
        _sign, digits, exponent = number.as_tuple()
        assert isinstance(exponent, int)  # finite
        text = "".join(map(str, digits)).lstrip("0")
        significant = text.rstrip("0")
        lowest = exponent + len(text) - len(significant)  # the last nonzero digit's place
        if (
            len(significant) > DECIMAL_MAX_DIGITS
            or number.adjusted() > DECIMAL_MAX_MAGNITUDE
            or lowest < -DECIMAL_MAX_SCALE
        ):
            raise _out_of_range(field)
    return number


def _out_of_range(field: str) -> ValidationFailed:
    return ValidationFailed(
        format_lazy(
            gettext_lazy(
                "{field} is out of range (at most {digits} significant digits, "
                "between 1e-{scale} and 1e{magnitude})."
            ),
            field=field,
            digits=DECIMAL_MAX_DIGITS,
            scale=DECIMAL_MAX_SCALE,
            magnitude=DECIMAL_MAX_MAGNITUDE + 1,
        ),
        details={field: "out_of_range"},
    )


def date_bounds_check(value: date, *, field: str) -> date:
    if not DATE_MIN <= value <= DATE_MAX:
        raise ValidationFailed(
            format_lazy(
                gettext_lazy("{field} must be between {low} and {high}."),
                field=field,
                low=DATE_MIN.isoformat(),
                high=DATE_MAX.isoformat(),
            ),
            details={field: "out_of_range"},
        )
    return value
