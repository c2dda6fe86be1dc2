"""When a digest runs: an interval ("30m", "2h", "1d": every so long, counted from the epoch so that restarts keep
the phase) or a 5-field cron expression ("0 18 * * *": minute, hour, day of month, month, day of week; ``*``,
``*/n``, ``a-b``, ``a-b/n`` and lists of them; day of week 0-7 with 0 and 7 Sunday; when both day fields are
restricted, either matching is enough, as in Vixie cron), read in the daemon's time zone. Pure: times in, times out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from livewatch.errors import ScheduleError

_INTERVAL = re.compile(r"^([0-9]{1,5})([mhd])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_SEARCH_DAYS = 366 * 8  # a cron that matches no date within 8 years (Feb 30) never runs


@dataclass(frozen=True)
class Schedule:
    text: str
    interval_s: int = 0  # > 0: an interval; 0: cron
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Monday .. 6 = Sunday (Python's)
    any_day: bool = True  # day of month is "*"
    any_weekday: bool = True  # day of week is "*"

    def _day_matches(self, d: datetime) -> bool:
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, d.weekday() in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, t: float, tz: tzinfo | None) -> float:
        """The first run strictly after ``t`` (seconds since the epoch); ScheduleError if there is none."""
        if self.interval_s:
            return (int(t) // self.interval_s + 1) * self.interval_s
        start = datetime.fromtimestamp(int(t) // 60 * 60 + 60, tz)
        day = start.replace(hour=0, minute=0)
        for i in range(_SEARCH_DAYS):
            d = (day + timedelta(days=i)) if tz is None else _local_day(day, i, tz)
            if not self._day_matches(d):
                continue
            for h in sorted(self.hours):
                for m in sorted(self.minutes):
                    at = _at(d, h, m, tz)
                    if at is not None and at.timestamp() > t:
                        return at.timestamp()
        raise ScheduleError(f"schedule {self.text!r} matches no date")

    def last_at_or_before(self, t: float, tz: tzinfo | None) -> float | None:
        """The latest run at or before ``t`` within the search window, or None."""
        if self.interval_s:
            return float(int(t) // self.interval_s * self.interval_s)
        end = datetime.fromtimestamp(t, tz)
        day = end.replace(hour=0, minute=0, second=0, microsecond=0)
        for i in range(_SEARCH_DAYS):
            d = (day - timedelta(days=i)) if tz is None else _local_day(day, -i, tz)
            if not self._day_matches(d):
                continue
            for h in sorted(self.hours, reverse=True):
                for m in sorted(self.minutes, reverse=True):
                    at = _at(d, h, m, tz)
                    if at is not None and at.timestamp() <= t:
                        return at.timestamp()
        return None


def _local_day(day: datetime, offset: int, tz: tzinfo) -> datetime:
    """Midnight ``offset`` calendar days from ``day`` in ``tz`` (days are not all 24 h where clocks change)."""
    naive = day.replace(tzinfo=None) + timedelta(days=offset)
    return naive.replace(tzinfo=tz)


def _at(day: datetime, hour: int, minute: int, tz: tzinfo | None) -> datetime | None:
    """The wall-clock time on ``day``; None when it does not exist there (skipped by a clock change)."""
    at = day.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if tz is None:
        return at
    back = datetime.fromtimestamp(at.timestamp(), tz)
    return at if (back.hour, back.minute) == (hour, minute) else None


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        if step_text and not step_text.isdigit():
            raise ScheduleError(f"{name}: {part!r} has a step that is not a number")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ScheduleError(f"{name}: a step must be 1 or more")
        if body == "*":
            a, b = lo, hi
        elif re.fullmatch(r"[0-9]{1,2}-[0-9]{1,2}", body):
            a, b = (int(v) for v in body.split("-"))
        elif re.fullmatch(r"[0-9]{1,2}", body):
            a = b = int(body)
            if step_text:
                b = hi
        else:
            raise ScheduleError(f"{name}: {part!r} is not a number, a range or *")
        if not lo <= a <= b <= hi:
            raise ScheduleError(f"{name}: {part!r} is outside {lo}-{hi}")
        values.update(range(a, b + 1, step))
    return frozenset(values)


def parse_schedule(text: str) -> Schedule:
    """An interval ("30m", "2h", "1d"; 1 minute to 366 days) or a 5-field cron expression; ScheduleError says
    what is wrong."""
    value = text.strip()
    if not value or len(value) > 100 or not value.isascii():
        raise ScheduleError("a schedule is an interval (30m, 2h, 1d) or a cron expression (0 18 * * *)")
    match = _INTERVAL.match(value)
    if match is not None:
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        if not 60 <= seconds <= 366 * 86400:
            raise ScheduleError(f"{value!r}: an interval is 1 minute to 366 days")
        return Schedule(value, interval_s=seconds)
    parts = value.split()
    if len(parts) != 5:
        raise ScheduleError(f"{value!r}: a cron expression has 5 fields (minute hour day month weekday), "
                            "or use an interval such as 30m")
    fields = [_field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _FIELDS)]
    weekdays = frozenset((d - 1) % 7 for d in fields[4])  # cron 0/7 Sunday, 1 Monday -> Python 6, 0
    return Schedule(value, minutes=fields[0], hours=fields[1], days=fields[2], months=fields[3], weekdays=weekdays,
                    any_day=parts[2] == "*", any_weekday=parts[4] == "*")
