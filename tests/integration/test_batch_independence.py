"""One stream through two real workers, one reading it 50 records at a time and the other 20,000: the risk
log, the alerts, the map and the history must be identical (they are decided at steps of event time)."""

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
from tests.support.kafka import produce
from tests.support.processes import ChildProcess, wait_for

pytestmark = pytest.mark.integration

EVENTS = 12_000


def _decided(executor: DriverExecutor) -> dict[str, list[tuple]]:
    return {
        "risk_updates": executor.query(
            "SELECT grid_id, version, score, level, previous_level, live_level, window_events, explanation "
            "FROM risk_updates FINAL ORDER BY grid_id, version"
        ),
        "alerts": executor.query(
            "SELECT alert_id, kind, level, previous_level, score, toUInt32(as_of) FROM alerts FINAL ORDER BY alert_id"
        ),
        "risk_latest": executor.query(
            "SELECT grid_id, toUInt32(as_of), score, level FROM risk_latest FINAL WHERE score > 0 ORDER BY grid_id"
        ),
        "windows": executor.query(
            "SELECT grid_id, toUInt32(window_start), events, score, level FROM grid_windows FINAL "
            "ORDER BY grid_id, window_start"
        ),
    }


async def test_small_and_large_batches_decide_the_same(settings: Settings, tmp_path) -> None:
    registry = GridRegistry.load(settings.grid_registry_path)
    grid_ids = [g.grid_id for g in registry.grids[:40]]
    base = settings.model_copy(update={"batch_within_seconds": 0.2, "heartbeat_seconds": 0})
    small = base.model_copy(update={"batch_max_events": 50, "worker_id": f"w-{settings.topic_prefix}small"})
    large = base.model_copy(
        update={"batch_max_events": 20_000, "worker_id": f"w-{settings.topic_prefix}large",
                "clickhouse_database": f"{base.clickhouse_database}_large"}
    )  # fmt: skip
    messages, distinct_valid = mixed_stream(grid_ids, datetime.now(UTC) - timedelta(hours=3), timedelta(hours=3),
                                            EVENTS, seed=11)  # fmt: skip
    await ensure_topics(base)
    await produce(base, base.topic_events, messages)
    prepare_database(small)
    prepare_database(large)
    workers = [ChildProcess("worker", s, tmp_path / f"{s.worker_id}.log").start() for s in (small, large)]
    databases = [connect(small), connect(large)]
    try:
        for db, child in zip(databases, workers, strict=True):

            def done(db: DriverExecutor = db, child: ChildProcess = child) -> bool:
                assert child.alive, child.log_tail()
                return events.count_distinct(db) == distinct_valid

            wait_for(done, timeout=180, what=f"every valid event stored by {child.command}")
        wait_for(lambda: _decided(databases[0]) == _decided(databases[1]), timeout=30, what="identical decisions")
        decided = _decided(databases[0])
        assert len(decided["risk_updates"]) > 50 and decided["alerts"], "the stream never escalates: too quiet"
    finally:
        for child in workers:
            child.stop()
        for db in databases:
            db.close()
