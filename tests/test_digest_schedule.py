"""Digest schedules: intervals keep their phase across restarts, cron expressions follow the daemon's time zone
(days of month and week as Vixie cron, clock changes), and bad expressions say what is wrong."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from livewatch.digests.schedule import parse_schedule
from livewatch.errors import ScheduleError

PARIS = ZoneInfo("Europe/Paris")


def at(text: str, tz=PARIS) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def test_intervals_count_from_the_epoch() -> None:
    s = parse_schedule("30m")
    assert s.next_after(1799.0, None) == 1800.0 and s.next_after(1800.0, None) == 3600.0
    assert s.last_at_or_before(3599.0, None) == 1800.0
    assert parse_schedule("1d").interval_s == 86400 and parse_schedule("2h").interval_s == 7200


def test_cron_in_the_time_zone() -> None:
    s = parse_schedule("0 18 * * *")
    assert s.next_after(at("2026-12-08T17:59:59"), PARIS) == at("2026-12-08T18:00:00")
    assert s.next_after(at("2026-12-08T18:00:00"), PARIS) == at("2026-12-09T18:00:00")
    assert s.last_at_or_before(at("2026-12-09T08:00:00"), PARIS) == at("2026-12-08T18:00:00")
    every = parse_schedule("*/15 9-17 * * 1-5")  # every quarter hour of office hours on weekdays
    assert every.next_after(at("2026-12-11T17:50:00"), PARIS) == at("2026-12-14T09:00:00")  # Friday -> Monday
    assert every.next_after(at("2026-12-08T10:07:00"), PARIS) == at("2026-12-08T10:15:00")
    sunday = parse_schedule("30 7 * * 0")
    assert sunday == parse_schedule("30 7 * * 7") or sunday.weekdays == parse_schedule("30 7 * * 7").weekdays
    assert sunday.next_after(at("2026-12-08T00:00:00"), PARIS) == at("2026-12-13T07:30:00")


def test_day_of_month_or_week_when_both_are_given() -> None:
    s = parse_schedule("0 12 1 * 1")  # the 1st of the month, and every Monday
    assert s.next_after(at("2026-12-08T13:00:00"), PARIS) == at("2026-12-14T12:00:00")  # a Monday
    assert s.next_after(at("2026-12-28T13:00:00"), PARIS) == at("2027-01-01T12:00:00")  # the 1st, a Friday


def test_clock_changes() -> None:
    s = parse_schedule("30 2 * * *")  # 02:30 does not exist on 2026-03-29 in Paris
    assert s.next_after(at("2026-03-28T03:00:00"), PARIS) == at("2026-03-30T02:30:00")
    daily = parse_schedule("0 18 * * *")
    assert daily.next_after(at("2026-03-28T19:00:00"), PARIS) - at("2026-03-28T19:00:00") == 23 * 3600 - 3600


def test_bad_schedules_say_why() -> None:
    for text, message in [("", "interval"), ("5x", "5 fields"), ("0 25 * * *", "hour"), ("* * * *", "5 fields"),
                          ("*/0 * * * *", "step"), ("0 18 31 2 *", "no date"), ("30s", "5 fields"),
                          ("999999d", "5 fields"), ("400d", "1 minute to 366 days"), ("a b c d e", "minute")]:
        with pytest.raises(ScheduleError, match=message):
            parse_schedule(text).next_after(0.0, PARIS)
