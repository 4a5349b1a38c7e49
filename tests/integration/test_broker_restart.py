"""The local broker restarts mid-stream and comes back empty (Tansu keeps topics in memory): the worker must
notice, say so, and store every event produced after the restart without being restarted itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan import services
from pingan.grids import GridRegistry
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from tests.support.events import call110
from tests.support.kafka import produce
from tests.support.processes import ChildProcess, wait_for

pytestmark = pytest.mark.integration

PER_PHASE = 1500


def _stream(grid_ids: list[str], start: datetime, first: int, count: int = PER_PHASE) -> list[tuple[bytes, bytes]]:
    messages = []
    for i in range(first, first + count):
        grid_id = grid_ids[i % len(grid_ids)]
        at = start + timedelta(seconds=i)
        messages.append((grid_id.encode(), orjson.dumps(call110(f"br-{i}", grid_id, at, "dispute", 2))))
    return messages


def _distinct(settings: Settings) -> int:
    executor = connect(settings)
    try:
        return events.count_distinct(executor)
    finally:
        executor.close()


def _by_partition(settings: Settings) -> list[tuple]:
    executor = connect(settings)
    try:
        return executor.query(
            "SELECT kafka_partition, startsWith(event_id, 'br-') AND toUInt32(substring(event_id, 4)) >= "
            f"{PER_PHASE} AS after, uniqExact(event_id), min(kafka_offset), max(kafka_offset) FROM events "
            "GROUP BY kafka_partition, after ORDER BY kafka_partition, after"
        )
    finally:
        executor.close()


async def test_a_broker_that_comes_back_empty_loses_no_later_event(settings: Settings, tmp_path) -> None:
    kafka_port, _ = services.free_loopback_ports(2)
    mine = settings.model_copy(
        update={
            "data_dir": tmp_path / "services",
            "kafka_bootstrap": f"127.0.0.1:{kafka_port}",
            "kafka_managed": True,
            "clickhouse_managed": False,
            "worker_id": f"w-{settings.topic_prefix}",
            "batch_within_seconds": 0.1,
        }
    )
    registry = GridRegistry.load(mine.grid_registry_path)
    grid_ids = [g.grid_id for g in registry.grids[:20]]
    start = datetime.now(UTC) - timedelta(hours=2)  # 4,500 events a second apart: all in the past
    services.up(mine)
    worker = None
    try:
        prepare_database(mine)
        await ensure_topics(mine)
        await produce(mine, mine.topic_events, _stream(grid_ids, start, 0))
        worker = ChildProcess("worker", mine, tmp_path / "worker.log").start()
        wait_for(lambda: _distinct(mine) == PER_PHASE, timeout=90, what="the first phase stored")

        services.down(mine)  # the broker only: this test's ClickHouse is the session's
        services.up(mine)  # back, empty
        await ensure_topics(mine)  # what `pingan services up` and the producers' own start-up do
        # More records than before the restart: the new log is longer than the old one was, so only the record
        # the checkpoint ended on (missing or different now) can tell that it is another log
        await produce(mine, mine.topic_events, _stream(grid_ids, start, PER_PHASE, 2 * PER_PHASE))
        try:
            wait_for(lambda: _distinct(mine) == 3 * PER_PHASE, timeout=60, what="every event after the restart stored")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stored per partition (count, first, last offset): {_by_partition(mine)}\n"
                                 f"{worker.log_tail(30)}") from None  # fmt: skip
        assert worker.alive
        assert "the log was lost" in worker.log_tail(400)
    finally:
        if worker is not None:
            worker.stop()
        services.down(mine)
