"""Times of questions about the past (livewatch.timerange): ISO 8601 and relative forms, and clear refusals."""

from __future__ import annotations

from datetime import timezone
from zoneinfo import ZoneInfo

import pytest

from livewatch.errors import TimeRangeError
from livewatch.timerange import parse_range, parse_time

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z


@pytest.mark.parametrize("text,expected", [
    ("now", NOW), ("-2h", NOW - 7200), ("-30m", NOW - 1800), ("-90s", NOW - 90), ("-1d", NOW - 86400),
    ("+1.5h", NOW + 5400), ("2026-05-28T20:26:40Z", NOW), ("2026-05-28T22:26:40+02:00", NOW),
    ("2026-05-28T20:26:40", NOW),  # no offset: the daemon's zone (UTC here)
    ("2026-05-28", NOW - (20 * 3600 + 26 * 60 + 40)),
])
def test_accepted_forms(text: str, expected: float) -> None:
    assert parse_time(text, NOW, timezone.utc) == pytest.approx(expected)


def test_a_zone_without_offset_uses_the_daemons_zone() -> None:
    assert parse_time("2026-05-28T22:26:40", NOW, ZoneInfo("Europe/Paris")) == pytest.approx(NOW)


@pytest.mark.parametrize("text", ["", "yesterday", "-2x", "-h", "2026-13-01", "-" + "9" * 50, "1e309", "-1e3h"])
def test_refused_forms(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, NOW, timezone.utc)


@pytest.mark.parametrize("text", ["-\u0663h", "\u0662\u0664h", "-\uff12h", "+\u09e8m", "\u0662\u0660\u0662\u0666-01-01",
                                  "0001-01-01T00:00", "0001-01-01T00:00+00:00", "9999-12-31T23:59:59",
                                  "9999-12-31T23:59:59-14:00", "1969-12-31T00:00+00:00"])
def test_other_scripts_digits_and_instants_out_of_range_get_our_own_words(text: str) -> None:
    """Arabic-Indic and fullwidth digits are not times; instants the zone conversion cannot take fail with our
    message, never Python's ("year 0 is out of range")."""
    for tz in (None, timezone.utc, ZoneInfo("Pacific/Kiritimati")):
        with pytest.raises(TimeRangeError) as info:
            parse_time(text, NOW, tz)
        message = str(info.value)
        assert "year" not in message and "isoformat" not in message.lower()
        assert message.startswith(repr(text)) or message.startswith("a time is")


def test_ranges() -> None:
    assert parse_range(None, None, NOW, None) == (NOW - 3600, NOW)
    assert parse_range("-2h", "-1h", NOW, None) == (NOW - 7200, NOW - 3600)
    with pytest.raises(ValueError, match="before"):
        parse_range("-1h", "-2h", NOW, None)
