"""The terminal view of `runstore tail`: clocks, sparklines and message lines."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from runstore._tailview import clock, log_line, message_line, sparkline
from runstore.tail import TailRecord


def test_clock_shows_minutes_or_hours() -> None:
    assert clock(None) == ""
    assert clock(0) == "0:00"
    assert clock(61.9) == "1:01"
    assert clock(3600 + 62) == "1:01:02"


def test_sparkline_scales_to_the_values_and_skips_what_is_not_finite() -> None:
    line = sparkline([0.0, 1.0, math.nan, 2.0, math.inf])
    assert len(line) == 3 and line[0] != line[-1]
    assert sparkline([5.0, 5.0]) == sparkline([1.0, 1.0])  # flat is flat, whatever the level
    assert sparkline([math.nan]) == ""


def test_a_message_line_has_time_run_level_and_text() -> None:
    ts = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    line = log_line(ts, "run-a", "warning", "disk nearly full")
    assert line.plain == f"{ts.astimezone():%H:%M:%S} run-a  warning disk nearly full"
    assert any(span.style for span in line.spans)  # the level in colour


def test_dev_events_are_marked_as_such() -> None:
    ts = datetime(2026, 1, 2, tzinfo=UTC)
    said = {"event": "message", "level": "info", "data": {"content": "hello"}}
    shapes = {
        "event": "dev_event",
        "level": "debug",
        "data": {"message": "shapes", "data": {"b": 2}},
    }
    message = TailRecord("r", "events", ts, data=said)
    dev = TailRecord("r", "events", ts, data=shapes)
    assert message_line(None, message).plain.endswith("info hello")
    assert message_line(None, dev).plain.endswith("[dev] shapes {'b': 2}")
