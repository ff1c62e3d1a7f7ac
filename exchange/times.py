"""The API's one time format: RFC 3339, UTC, milliseconds, ``Z`` (``2026-12-05T06:40:01.123Z``).

Every timestamp the exchange gives out — REST bodies, websocket frames, CSV — is written by
``time_text`` (or ``ms_text``/``seconds_text`` for the integer times the runner and the candles
keep). Every time a client sends — query parameters and JSON fields — is read by ``time_parse``:
that format (any RFC 3339 offset, any fraction) or integer milliseconds since the epoch, which is
what ccxt and most bots send. Standard library only, so the runner's pure parts may use it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)

# RFC 3339 date-time: a "T" (or space, as RFC 3339 allows), seconds required, a zone required.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
# Milliseconds since the epoch: digits only (a sign or a fraction is not a time we give out),
# up to the end of year 9999 (Python's datetime ends there).
_MILLISECONDS = re.compile(r"\d{1,15}", re.ASCII)
MAX_MILLISECONDS = 253_402_300_799_999


class TimeFormatError(ValueError):
    """Raised by ``time_parse`` for anything but RFC 3339 or integer milliseconds."""


def time_text(moment: datetime | None) -> str | None:
    """``moment`` (timezone-aware) as RFC 3339 UTC with milliseconds (truncated) and ``Z``."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every time in the exchange is timezone-aware")
    moment = moment.astimezone(UTC)
    # not strftime: its %Y does not pad years before 1000 on every platform
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def ms_text(milliseconds: int) -> str:
    """Milliseconds since the epoch as RFC 3339 (exact: no float on the way)."""
    return time_text(EPOCH + timedelta(milliseconds=milliseconds))  # type: ignore[return-value]


def seconds_text(seconds: int) -> str:
    """Whole seconds since the epoch (a candle's start) as RFC 3339."""
    return ms_text(seconds * 1000)


def time_ms(moment: datetime) -> int:
    """``moment`` as whole milliseconds since the epoch (floored, exact)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def time_parse(raw: str | int) -> datetime:
    """A client's time: RFC 3339 (with a zone) or integer milliseconds since the epoch (an
    ``int`` or a string of digits). Anything else raises ``TimeFormatError``."""
    if isinstance(raw, bool):
        raise TimeFormatError(raw)
    if isinstance(raw, str) and _MILLISECONDS.fullmatch(raw):
        raw = int(raw)
    if isinstance(raw, int):
        if not 0 <= raw <= MAX_MILLISECONDS:
            raise TimeFormatError(raw)
        return EPOCH + timedelta(milliseconds=raw)
    if not isinstance(raw, str):
        raise TimeFormatError(raw)
    if not _RFC3339.fullmatch(raw):
        raise TimeFormatError(raw)
    text = raw.upper().replace(" ", "T").replace("Z", "+00:00")
    head, _, tail = text.partition(".")
    if tail:  # fromisoformat takes at most microseconds: cut the fraction to six digits
        fraction, zone = tail[:-6], tail[-6:]
        text = f"{head}.{fraction[:6].ljust(6, '0')}{zone}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:  # e.g. month 13
        raise TimeFormatError(raw) from error
    # In UTC (PostgreSQL takes offsets up to 15:59, RFC 3339 up to 23:59); an instant before
    # year 1 or after 9999 there is clamped: as a bound it selects the same rows.
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return EARLIEST if moment.year < 5000 else LATEST


TIME_FORMAT_HELP = (
    "RFC 3339 (e.g. 2026-12-05T06:40:01.123Z) or integer milliseconds since the Unix epoch."
)
