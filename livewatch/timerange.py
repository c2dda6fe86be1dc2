"""Times a client gives for a question about the past: ISO 8601 or relative to now. Pure: ``now`` is passed in.

    2026-11-27T14:03:00+01:00   an instant (without an offset: the daemon's time zone, model.timezone)
    2026-11-27                  midnight at the start of that day
    -2h  -30m  -90s  -1d        that long before now (also without the sign: 24h; + for after now)
    now
"""

from __future__ import annotations

import math
import re
from datetime import datetime, tzinfo

from livewatch.errors import TimeRangeError

_RELATIVE = re.compile(r"^([+-]?)([0-9]{1,6}(?:\.[0-9]{1,3})?)([smhd])$")  # ASCII digits only
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_CHARS = 40
_NOT_A_TIME = "{value!r} is not a time: use ISO 8601 (2026-11-27T14:03:00) or relative (-2h, -30m, -90s, -1d)"
_EARLIEST, _LATEST = 0.0, 253370764800.0  # 1970-01-01 and 9999-01-01 UTC


def parse_time(text: str, now: float, tz: tzinfo | None) -> float:
    """Seconds since the epoch; TimeRangeError with a message a client can act on (never Python's own words)."""
    value = text.strip()
    if not value or len(value) > MAX_CHARS:
        raise TimeRangeError(f"a time is 1-{MAX_CHARS} characters: ISO 8601 or relative like -2h")
    if value == "now":
        return now
    match = _RELATIVE.match(value)
    if match is not None:
        sign, amount, unit = match.groups()
        delta = float(amount) * _UNITS[unit]
        return now + delta if sign == "+" else now - delta  # "24h": 24 hours ago, as "-24h"
    if not value.isascii():  # fromisoformat takes other scripts' digits; a client's time never needs them
        raise TimeRangeError(_NOT_A_TIME.format(value=value))
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise TimeRangeError(_NOT_A_TIME.format(value=value)) from None
    try:  # the zone's conversion fails for instants near year 1 or 9999, with Python's own words
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz) if tz is not None else dt.astimezone()
        stamp = dt.timestamp()
    except (ValueError, OverflowError, OSError):
        stamp = math.nan
    if not (math.isfinite(stamp) and _EARLIEST <= stamp <= _LATEST):
        raise TimeRangeError(f"{value!r} is out of range: times from 1970 to 9998")
    return stamp


def parse_range(since: str | None, until: str | None, now: float, tz: tzinfo | None) -> tuple[float, float]:
    """(since, until) of a question; until defaults to now, since to one hour before until."""
    end = parse_time(until, now, tz) if until else now
    start = parse_time(since, now, tz) if since else end - 3600.0
    if start >= end:
        raise TimeRangeError("'since' must be before 'until'")
    return start, end
