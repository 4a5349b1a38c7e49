"""A worker killed with SIGKILL mid-stream loses nothing and counts nothing twice.

Two workers read the same topic into two databases: one runs uninterrupted, the other is SIGKILLed while
it is busy and restarted. Afterwards both databases must agree, row for row, on events, windows and risk.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pingan.grids import GridRegistry
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import DriverExecutor, connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from tests.support.events import mixed_stream
from tests.support.kafka import mixed_records, produce_records
from tests.support.processes import ChildProcess, wait_for

pytestmark = pytest.mark.integration

EVENTS = 40_000


def _snapshot(executor: DriverExecutor) -> dict[str, object]:
    return {
        "events": executor.query("SELECT uniqExact(event_id), countIf(late = 1) FROM events FINAL"),
        "windows": executor.query(
            "SELECT grid_id, toUInt32(window_start), events, weighted, score, level "
            "FROM grid_windows FINAL ORDER BY grid_id, window_start"
        ),
        # The map: grids without a row, or at zero, are green. Risk is decided at steps of event time, so
        # as_of is the same whatever the batches were.
        "risk": executor.query(
            "SELECT grid_id, toUInt32(as_of), score, level, window_events, dominant_source FROM risk_latest FINAL "
            "WHERE score > 0 ORDER BY grid_id"
        ),
        # Every decision and every alert: the replay of the killed batch decides them again under the same keys.
        "risk_updates": executor.query(
            "SELECT grid_id, version, score, level, previous_level, live_level, window_events "
            "FROM risk_updates FINAL ORDER BY grid_id, version"
        ),
        "alerts": executor.query(
            "SELECT alert_id, kind, level, previous_level, score, toUInt32(as_of) FROM alerts FINAL ORDER BY alert_id"
        ),
        "dead_letters": executor.query("SELECT count() FROM dead_letters FINAL"),
    }


def _missing(killed_db: DriverExecutor, steady_db: DriverExecutor) -> str:
    """Where the interrupted run's events differ from the uninterrupted one's: (partition, offset) ranges."""
    sql = "SELECT DISTINCT kafka_partition, kafka_offset FROM events"
    mine, theirs = set(killed_db.query(sql)), set(steady_db.query(sql))
    lost, extra = sorted(theirs - mine), sorted(mine - theirs)
    return f"missing (partition, offset): {len(lost)}, first {lost[:10]}, last {lost[-3:]}; unexpected: {extra[:5]}"


async def test_sigkill_mid_stream_loses_and_double_counts_nothing(settings: Settings, tmp_path) -> None:
    registry = GridRegistry.load(settings.grid_registry_path)
    grid_ids = [g.grid_id for g in registry.grids[:60]]
    # Small batches so that the kill lands mid-stream; three hours of event time so windows close and expire.
    # No heartbeats: they would add the idle end's wall-clock time to one stream's results and not the other's.
    overrides = {"batch_max_events": 500, "batch_within_seconds": 0.1, "heartbeat_seconds": 0}
    base = settings.model_copy(update={**overrides, "worker_id": f"w-{settings.topic_prefix}"})
    killed = base.model_copy(update={"worker_id": f"{base.worker_id}-killed"})
    steady = base.model_copy(
        update={"worker_id": f"{base.worker_id}-steady", "clickhouse_database": f"{base.clickhouse_database}_steady"}
    )
    start = datetime.now(UTC) - timedelta(hours=3)
    messages, distinct_valid = mixed_stream(grid_ids, start, timedelta(hours=3), EVENTS)

    await ensure_topics(base)
    # Both record formats, so the replay after the kill goes through event batch records and single ones.
    await produce_records(base, base.topic_events, mixed_records(messages, partitions=base.topic_partitions))
    prepare_database(killed)
    prepare_database(steady)

    steady_worker = ChildProcess("worker", steady, tmp_path / "steady.log").start()
    victim = ChildProcess("worker", killed, tmp_path / "killed.log").start()
    killed_db = connect(killed)
    steady_db = connect(steady)
    try:
        # Kill once the victim is well into the stream, but far from done.
        wait_for(
            lambda: events.count_rows(killed_db) > EVENTS // 5,
            timeout=90,
            what="the victim to get going",
            interval=0.05,
        )
        victim.kill()
        stored_at_kill = events.count_distinct(killed_db)
        assert stored_at_kill < distinct_valid, "the worker finished before the kill: make the stream longer"
        victim = ChildProcess("worker", killed, tmp_path / "killed-restarted.log").start()

        for db, child in ((steady_db, steady_worker), (killed_db, victim)):

            def all_stored(db: DriverExecutor = db, child: ChildProcess = child) -> bool:
                assert child.alive, child.log_tail()
                return events.count_distinct(db) == distinct_valid

            try:
                wait_for(all_stored, timeout=120, what=f"every valid event stored ({distinct_valid})")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{_missing(killed_db, steady_db)}\n{child.log_tail(12)}") from None
        # Risk and windows of the last batch land just after its events: poll until both agree.
        try:
            wait_for(lambda: _snapshot(killed_db) == _snapshot(steady_db), timeout=30, what="identical results")
        except AssertionError:
            after, uninterrupted = _snapshot(killed_db), _snapshot(steady_db)
            for part in after:
                mine = {row[:2]: row[2:] for row in after[part]}  # type: ignore[attr-defined]
                theirs = {row[:2]: row[2:] for row in uninterrupted[part]}  # type: ignore[attr-defined]
                differ = sorted((k, mine.get(k), theirs.get(k)) for k in mine.keys() | theirs.keys()
                                if mine.get(k) != theirs.get(k))  # fmt: skip
                assert not differ, (part, len(differ), differ[:8])
            raise
        result = _snapshot(killed_db)
        assert result["events"][0][0] == distinct_valid
        assert result["risk"], "no grid has a risk level: the scenario is too quiet"
        assert "escalation" in {row[1] for row in result["alerts"]}, "no alerts: the scenario is too quiet"
        assert {row[3] for row in result["risk"]} - {"green"}, "the scenario never leaves green"
        # nothing double-counted: the windows hold each non-late distinct event exactly once
        on_time = distinct_valid - result["events"][0][1]
        assert sum(row[2] for row in result["windows"]) == on_time
    finally:
        victim.stop()
        steady_worker.stop()
        killed_db.close()
        steady_db.close()
