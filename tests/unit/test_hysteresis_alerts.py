"""Hysteresis (colours rise at once, fall after quiet closed windows) and alerts, as pure sequences."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pingan.errors import InvalidCursor, InvalidEvent
from pingan.index.alerts import alert_for, decode_cursor, encode_cursor
from pingan.index.levels import Level
from pingan.index.scoring import shown_level
from pingan.streams.windows import PartitionState, WindowSpec
from tests.support.defaults import shipped_index

GREEN, YELLOW, ORANGE, RED = Level.GREEN, Level.YELLOW, Level.ORANGE, Level.RED
INDEX = shipped_index()


@pytest.mark.parametrize(
    ("live", "closed", "shown"),
    [
        (RED, [GREEN, GREEN], RED),  # escalation is immediate
        (GREEN, [RED, GREEN], RED),  # one closed window still red: held
        (GREEN, [YELLOW, ORANGE], ORANGE),  # held at the highest of the closed windows
        (GREEN, [GREEN, GREEN], GREEN),  # two quiet closed windows: down
        (YELLOW, [GREEN, GREEN], YELLOW),
        (GREEN, [], GREEN),  # no hysteresis configured
    ],
)
def test_shown_level(live: Level, closed: list[Level], shown: Level) -> None:
    assert shown_level(live, closed) is shown


def test_a_grid_steps_down_only_after_two_quiet_closed_windows() -> None:
    """Four criminal calls at T0 (orange for an hour), then the watermark walks on, one bucket at a time."""
    spec = WindowSpec(300, 3600, 120, INDEX.quiet_windows)
    state = PartitionState(spec)
    t0 = int(datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp())
    for offset in range(4):
        state.apply("G1", t0 * 1000, ("call110", "criminal", 3), offset, f"e{offset}")
    sequence = []
    for minute in (1, 30, 59, 61, 66, 71, 76, 81):
        state.apply("G2", (t0 + minute * 60) * 1000, ("checkpoint", "pass", 1), 100 + minute, f"p{minute}")
        live, shown = state.assess_grid("G1", INDEX)
        sequence.append((minute, live.level.value, shown.value))
    # live drops at minute 60 (the calls leave the hour); the shown colour waits until the hours ending at
    # the last two closed windows (closed 2 minutes after they end) no longer hold the calls either
    assert sequence == [
        (1, "orange", "orange"), (30, "orange", "orange"), (59, "orange", "orange"), (61, "green", "orange"),
        (66, "green", "orange"), (71, "green", "orange"), (76, "green", "green"), (81, "green", "green"),
    ]  # fmt: skip


AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("previous", "level", "kind"),
    [
        ("", "orange", "escalation"),
        ("yellow", "red", "escalation"),
        ("orange", "red", "escalation"),
        ("red", "orange", "de-escalation"),
        ("orange", "green", "de-escalation"),
        ("green", "yellow", None),  # yellow is attention, not an alert
        ("yellow", "green", None),
        ("red", "red", None),
    ],
)
def test_alerts_are_raised_for_orange_and_red_only(previous: str, level: str, kind: str | None) -> None:
    alert = alert_for("G1", previous, level, 120.0, AT, 42, {}, "v1")
    assert (alert.kind if alert else None) == kind
    if alert:
        assert alert.alert_id == "G1:42"


def test_cursors_round_trip_and_reject_garbage() -> None:
    assert decode_cursor(encode_cursor(1795420800000, "PA01-C01-G01")) == (1795420800000, "PA01-C01-G01")
    with pytest.raises(InvalidCursor, match="cursor") as raised:
        decode_cursor("not-a-cursor")
    # A bad cursor is the caller's mistake, not an input record to dead-letter.
    assert not isinstance(raised.value, InvalidEvent)
    assert raised.value.field == "after"
