"""The published index and the roll-up snapshots on the real ClickHouse: events go in through
pingan.store.events, ``publish`` and ``rollup_snapshot`` run, and the stored rows are checked against
numbers worked out by hand (tests/support/small_city.py)."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta

import pytest

from pingan.cli_index import add_index_parser, describe, rollup_snapshot
from pingan.clock import FixedClock
from pingan.grids import GridRegistry
from pingan.index.records import RiskUpdate
from pingan.publishing import publish
from pingan.settings import Settings
from pingan.store import grid_units, published, risk, units
from pingan.store.client import DriverExecutor, connect
from pingan.store.migrate import migrate
from tests.support import small_city
from tests.support.small_city import CONFIG, DAY1, DAY2, REGISTRY

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


@pytest.fixture
def executor(server_executor: DriverExecutor) -> DriverExecutor:
    """This test's database on the 18.16 server, migrated."""
    migrate(server_executor)
    return server_executor


def _table(rows: list[dict]) -> list[tuple]:
    return [(r["unit_id"], r["rank"], r["score"], r["previous_rank"], r["change"], r["flag_change"]) for r in rows]


def test_daily_index_ranks_changes_and_hats(executor: DriverExecutor) -> None:
    small_city.insert_two_days(executor)
    publication = publish(executor, REGISTRY, CONFIG, "day", DAY2, now=NOW)
    assert publication.grid_units_synced
    assert (publication.period.start, publication.period.end) == (DAY2, date(2026, 11, 24))

    communities = published.read(executor, "day", "community", DAY2)
    # Baseline: day 1's 12 weighted incidents over 40,000 residents = 3.0 per 10,000.
    # C2 quiet: 100 (was 2 disputes: ratio 2/3 -> 93.3). C1 1 dispute: ratio 1/3 -> 96.7 (was 8 -> 73.3).
    # C4 2 criminal (4): ratio 4/3 -> 86.7 (was 93.3). C3 3 criminal + 1 of severity 5 (10): ratio 10/3 -> 66.7.
    assert _table(communities) == [
        ("C2", 1, 100.0, 2, 6.7, ""),
        ("C1", 2, 96.7, 4, 23.4, "left"),
        ("C4", 3, 86.7, 2, -6.6, ""),
        ("C3", 4, 66.7, 1, -33.3, "entered"),
    ]
    c3 = communities[3]
    assert (c3["incidents"], c3["weighted"], c3["per_10k"], c3["baseline_per_10k"], c3["ratio"]) == (
        4, 10.0, 10.0, 3.0, 3.333,
    )  # fmt: skip
    assert (c3["level"], c3["dominant_type"], c3["unit_name"], c3["population"]) == ("red", "call110/criminal",
                                                                                     "三社区", 10_000)  # fmt: skip
    assert (c3["previous_score"], c3["previous_incidents"], c3["rank_change"]) == (100.0, 0, -3)
    assert (communities[1]["previous_incidents"], communities[1]["incidents"]) == (4, 1)  # a duplicate counts once
    assert communities[0]["incidents"] == 0  # camera alerts in C2 are not incidents
    assert {(r["period_end"], r["ranked_units"], r["config_version"], r["timezone"]) for r in communities} == {
        (date(2026, 11, 24), 4, "small-city-1", "Asia/Shanghai")
    }

    stations = published.read(executor, "day", "police_station", DAY2)
    # P1 (25,000): 7 weighted -> 2.8 per 10,000 -> 90.7 (was 10 -> 86.7, flagged); P2 (15,000): 8 -> 82.2
    # (was 2 -> 95.6).
    assert _table(stations) == [("P1", 1, 90.7, 2, 4.0, "left"), ("P2", 2, 82.2, 1, -13.4, "entered")]
    diff = publication.diff("community")
    assert (diff.entered, diff.left, diff.still) == (("C3",), ("C1",), ())
    assert any("hat on: C3; off: C1" in line for line in describe(publication))

    # Day 1 on its own: no history, so it is compared with its own district rate (3.0 as well).
    publish(executor, REGISTRY, CONFIG, "day", DAY1, now=NOW)
    first = published.read(executor, "day", "community", DAY1)
    assert [(r["unit_id"], r["rank"], r["score"], r["flagged"]) for r in first] == [
        ("C3", 1, 100.0, 0), ("C2", 2, 93.3, 0), ("C4", 2, 93.3, 0), ("C1", 4, 73.3, 1),
    ]  # fmt: skip
    assert published.latest_period_start(executor, "day", "community") == DAY2
    assert published.latest_period_start(executor, "week", "community") is None


def test_publishing_again_is_idempotent_and_follows_the_registry(executor: DriverExecutor) -> None:
    small_city.insert_two_days(executor)
    publish(executor, REGISTRY, CONFIG, "day", DAY2, now=NOW)
    before = published.read(executor, "day", "community", DAY2)
    again = publish(executor, REGISTRY, CONFIG, "day", DAY2, now=NOW + timedelta(hours=1))
    assert not again.grid_units_synced  # unchanged registry: nothing rewritten
    assert published.read(executor, "day", "community", DAY2) == before
    final_rows = executor.query("SELECT count() FROM published_index FINAL WHERE period_kind = 'day'")[0][0]
    assert final_rows == 4 + 2
    assert grid_units.content(executor) == grid_units.registry_rows(REGISTRY)
    assert grid_units.content(executor)[0] == ("G1", "C1", "S", "D", "P1", 10_000)


def test_weekly_and_monthly_periods(executor: DriverExecutor) -> None:
    small_city.insert_two_days(executor)
    # Sunday is the last day of one ISO week and Monday the first of the next: the weeks repeat the days.
    week = publish(executor, REGISTRY, CONFIG, "week", date(2026, 11, 25), now=NOW)
    assert (week.period.start, week.period.end) == (DAY2, date(2026, 11, 30))
    assert _table(published.read(executor, "week", "community", DAY2)) == [
        ("C2", 1, 100.0, 2, 6.7, ""),
        ("C1", 2, 96.7, 4, 23.4, "left"),
        ("C4", 3, 86.7, 2, -6.6, ""),
        ("C3", 4, 66.7, 1, -33.3, "entered"),
    ]
    # November holds both days, October nothing: the month is compared with its own rate, 27 weighted
    # incidents over 40,000 residents = 6.75 per 10,000; October scores 100 everywhere.
    publish(executor, REGISTRY, CONFIG, "month", DAY1, now=NOW)
    month = published.read(executor, "month", "community", date(2026, 11, 1))
    assert [(r["unit_id"], r["score"], r["incidents"], r["flag_change"]) for r in month] == [
        ("C2", 97.0, 2, ""), ("C4", 91.1, 4, ""), ("C1", 86.7, 5, ""), ("C3", 85.2, 4, "entered"),
    ]  # fmt: skip
    assert {r["baseline_per_10k"] for r in month} == {6.75}


def test_rollup_snapshot_is_stored_per_unit_and_replayable(executor: DriverExecutor) -> None:
    as_of = datetime(2026, 11, 23, 11, 55, tzinfo=UTC)
    risk.insert(
        executor,
        [
            RiskUpdate("G3", as_of - timedelta(minutes=10), 120.0, "orange", "", 9, "call110", {}, "v1", 1),
            RiskUpdate("G4", as_of, 30.0, "green", "", 2, "call110", {}, "v1", 1),
            RiskUpdate("G5", as_of - timedelta(minutes=5), 60.0, "yellow", "", 4, "app_report", {}, "v1", 1),
        ],
    )
    snapshot = rollup_snapshot(executor, REGISTRY, now=NOW)
    assert snapshot.as_of == as_of  # the newest assessment, not the wall clock
    assert snapshot.rows == 1 + 1 + 4 + 2
    stored = {r["unit_id"]: r for r in units.latest_snapshot(executor, "community")}
    assert list(stored) == ["C1", "C2", "C3", "C4"]
    # C3 = G3 (5,000, 120) + G4 (5,000, 30): weighted 75.0, worst 120, orange
    c3 = stored["C3"]
    assert (c3["level"], c3["weighted_score"], c3["worst_score"], c3["as_of"]) == ("orange", 75.0, 120.0, as_of)
    assert (c3["grids_green"], c3["grids_orange"], c3["top_grids"], c3["top_scores"]) == (1, 1, ["G3", "G4"],
                                                                                          [120.0, 30.0])  # fmt: skip
    assert (stored["C1"]["level"], stored["C1"]["top_grids"]) == ("green", [])
    (station,) = [r for r in units.latest_snapshot(executor, "police_station") if r["unit_id"] == "P2"]
    # P2 = G4 (5,000, 30) + G5 (10,000, 60): (150,000 + 600,000) / 15,000 = 50.0
    assert (station["level"], station["weighted_score"], station["worst_score"]) == ("yellow", 50.0, 60.0)

    # Nothing new: the same key is rewritten, not duplicated.
    rollup_snapshot(executor, REGISTRY, now=NOW + timedelta(minutes=5))
    count = executor.query("SELECT count() FROM unit_risk FINAL WHERE unit_level = 'community'")[0][0]
    assert count == 4
    history = units.history(executor, "community", "C3", as_of - timedelta(hours=1), as_of + timedelta(hours=1))
    assert [(h["as_of"], h["weighted_score"]) for h in history] == [(as_of, 75.0)]


def test_commands_on_the_demo_registry_with_the_shipped_config(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="pingan")
    add_index_parser(parser.add_subparsers(dest="command", required=True))
    clock = FixedClock(NOW)  # Tuesday 09:00 in Beijing: the last complete week is 16-22 November

    args = parser.parse_args(["publish", "--period", "week"])
    assert args.handler(settings, args, clock) == 0
    assert "published week 2026-11-16..2026-11-23" in capsys.readouterr().out
    demo = GridRegistry.load(settings.grid_registry_path)
    executor = connect(settings)
    try:
        for level, count in (("community", len(demo.units["community"])), ("police_station", 10)):
            rows = published.read(executor, "week", level, date(2026, 11, 16))
            # No events: everyone is at 100 and shares rank 1, nobody wears the hat.
            assert {(r["score"], r["rank"], r["flagged"], r["ranked_units"]) for r in rows} == {(100.0, 1, 0, count)}
        assert len(grid_units.content(executor)) == len(demo.grids)
    finally:
        executor.close()

    args = parser.parse_args(["rollup"])
    assert args.handler(settings, args, clock) == 0
    expected = sum(len(found) for found in demo.units.values())
    assert f"unit_risk: {expected} rows as of {NOW.isoformat()}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["publish", "--period", "week", "--date", "23/11/2026"])
