"""The evaluation harness's scoring: alerting grid-hours from change points, detection within 15 minutes."""

from __future__ import annotations

from datetime import timedelta

from bench.evaluate_index import START, Incident, Timeline, score


def test_alerting_hours_span_every_hour_a_grid_stayed_orange_or_red() -> None:
    timeline = Timeline()
    timeline.add("G1", START + timedelta(minutes=50), "orange")
    timeline.add("G1", START + timedelta(minutes=130), "yellow")
    timeline.add("G2", START + timedelta(minutes=10), "yellow")
    hour0 = int(START.timestamp()) // 3600
    assert timeline.alerting_hours(START + timedelta(hours=4)) == {("G1", hour0), ("G1", hour0 + 1), ("G1", hour0 + 2)}


def test_detection_within_15_minutes_and_false_alarms_outside_incidents() -> None:
    start = START + timedelta(hours=3)
    fast = Incident("G1", 3, start, 3, 0.1)
    slow = Incident("G2", 3, start, 3, 0.1)
    timeline = Timeline()
    timeline.add("G1", start + timedelta(minutes=12), "orange")  # detected in time
    timeline.add("G1", start + timedelta(minutes=60), "green")
    timeline.add("G2", start + timedelta(minutes=20), "red")  # too late to count as detected
    timeline.add("G2", start + timedelta(minutes=80), "green")
    timeline.add("G3", START + timedelta(hours=4), "orange")  # no incident: a false alarm
    result = score([fast, slow], timeline, hours=6, grids=3)
    [row3] = [r for r in result["rows"] if r["multiplier"] == 3]
    assert (row3["incidents"], row3["recall_15min"], row3["reached_red"]) == (2, 0.5, 1)
    assert row3["median_min_to_orange"] == 16.0  # median of 12 and 20
    # G3 is orange from hour 4 to the end (hours 4 and 5); G1 and G2 alert only in their excused hours (3, 4)
    assert result["false_alarm_hours"] == 2
    assert result["grid_hours"] == 3 * 4 - 2 * 2  # hours 2-5 counted for three grids, minus the excused ones
