"""exchange.times: the one time format out, the two forms in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.times import (
    MAX_MILLISECONDS,
    TimeFormatError,
    ms_text,
    seconds_text,
    time_ms,
    time_parse,
    time_text,
)

moments = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
)


def test_written_in_utc_with_milliseconds_and_z() -> None:
    east = timezone(timedelta(hours=8))
    assert time_text(datetime(2026, 12, 5, 14, 40, 1, 123_999, tzinfo=east)) == (
        "2026-12-05T06:40:01.123Z"  # truncated, never rounded into the next millisecond
    )
    assert time_text(None) is None
    assert ms_text(1_796_452_801_123) == "2026-12-05T06:40:01.123Z"
    assert seconds_text(1_796_452_800) == "2026-12-05T06:40:00.000Z"
    with pytest.raises(ValueError):
        time_text(datetime(2026, 12, 5))  # naive: never guessed


@pytest.mark.parametrize(
    "raw",
    [
        "2026-12-05T06:40:01.123Z", "2026-12-05T06:40:01.123456789Z", "2026-12-05t06:40:01.123z",
        "2026-12-05T14:40:01.123+08:00", "2026-12-05 06:40:01.123Z", "1796452801123",
        1_796_452_801_123,
    ],
)  # fmt: skip
def test_read_as_rfc3339_or_integer_milliseconds(raw) -> None:
    assert time_ms(time_parse(raw)) == 1_796_452_801_123


@pytest.mark.parametrize(
    "raw",
    [
        "", "now", "2026-12-05", "2026-12-05T06:40:01", "2026-12-05T06:40Z", "2026-13-05T06:40:01Z",
        "1796452801.123", "-1", "+1796452801123", " 1796452801123", "1796452801123\n",
        str(MAX_MILLISECONDS + 1), MAX_MILLISECONDS + 1, -1, True, 1.5, None, "١٧٩٦",
    ],
)  # fmt: skip
def test_anything_else_is_refused(raw) -> None:
    with pytest.raises(TimeFormatError):
        time_parse(raw)


def test_the_edges_of_the_range_are_read() -> None:
    assert time_text(time_parse(0)) == "1970-01-01T00:00:00.000Z"
    assert time_text(time_parse(MAX_MILLISECONDS)) == "9999-12-31T23:59:59.999Z"
    # read in UTC, whatever the offset (PostgreSQL refuses offsets past 15:59); an instant
    # outside Python's years in UTC is clamped to their edge
    assert time_parse("0856-10-09T23:29:16.5+23:29").utcoffset() == timedelta(0)
    assert time_text(time_parse("0001-01-01T00:00:00+01:00")) == "0001-01-01T00:00:00.000Z"
    assert time_text(time_parse("9999-12-31T23:59:59-01:00")) == "9999-12-31T23:59:59.999Z"


@given(moments)
def test_what_is_written_reads_back_to_the_millisecond(moment) -> None:
    text = time_text(moment)
    assert time_parse(text) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert ms_text(time_ms(moment)) == text
    if time_ms(moment) >= 0:  # milliseconds since the epoch are never negative
        assert time_parse(str(time_ms(moment))) == time_parse(text)
