"""The watch messages' active hours at the edge agree with the trigger policy: from 0-23, to 0-24 exclusive."""

from __future__ import annotations

import pytest

from livewatch.config.sections import WatchSection
from livewatch.server.watchproto import WatchAdd, WatchProtocolError, parse_watch_request
from livewatch.watches.policy import in_active_hours

ADD = {"name": "door", "camera": "demo", "condition": "a person at the door"}


@pytest.mark.parametrize("hours", [[0, 24], [22, 6], [18, 0], [23, 24], [0, 1]])
def test_windows_the_policy_understands_are_accepted_everywhere(hours: list[int]) -> None:
    add = parse_watch_request("watch.add", {**ADD, "active_hours": hours}, 1)
    assert isinstance(add, WatchAdd) and list(add.active_hours or ()) == hours
    assert WatchSection(camera="demo", condition="c", active_hours=hours).active_hours is not None


def test_zero_to_twenty_four_is_every_hour() -> None:
    assert all(in_active_hours((0, 24), hour) for hour in range(24))


@pytest.mark.parametrize("hours", [[0, 25], [24, 0], [-1, 5], [5, 5], [1], [1, 2, 3], ["1", 2], [True, 3], [1.5, 3]])
def test_other_windows_are_refused_with_the_rule(hours: list) -> None:
    with pytest.raises(WatchProtocolError, match="active_hours"):
        parse_watch_request("watch.add", {**ADD, "active_hours": hours}, 1)
