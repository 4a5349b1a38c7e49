"""ClickHouse stops mid-stream and comes back: the worker waits, then stores everything, each event once."""

from __future__ import annotations

import logging
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
log = logging.getLogger(__name__)

PER_PHASE = 3000


def _stream(grid_ids: list[str], start: datetime, offset: int) -> list[tuple[bytes, bytes]]:
    messages = []
    for i in range(PER_PHASE):
        grid_id = grid_ids[i % len(grid_ids)]
        at = start + timedelta(seconds=(offset + i) * 0.5)  # in order: nothing late, so every event counts
        messages.append((grid_id.encode(), orjson.dumps(call110(f"ch-{offset + i}", grid_id, at, "dispute", 2))))
    return messages


def _stored(settings: Settings) -> tuple[int, int]:
    executor = connect(settings)
    try:
        distinct = events.count_distinct(executor)
        windowed = executor.query("SELECT sum(events) FROM grid_windows FINAL")[0][0]
        return distinct, windowed
    finally:
        executor.close()  # a connected client makes ClickHouse 18.16 take 10 s to stop


async def test_a_clickhouse_restart_loses_nothing(settings: Settings, tmp_path) -> None:
    # A ClickHouse of this test's own (the session's is shared); the session's broker.
    ports = services.free_loopback_ports(2)
    mine = settings.model_copy(
        update={
            "data_dir": tmp_path / "services",
            "clickhouse_port": ports[0],
            "clickhouse_http_port": ports[1],
            "kafka_managed": False,
            "worker_id": f"w-{settings.topic_prefix}",
            "batch_max_events": 300,
            "batch_within_seconds": 0.1,
        }
    )
    registry = GridRegistry.load(mine.grid_registry_path)
    grid_ids = [g.grid_id for g in registry.grids[:20]]
    start = datetime.now(UTC) - timedelta(hours=2)
    services.up(mine)
    worker = None
    try:
        prepare_database(mine)
        await ensure_topics(mine)
        await produce(mine, mine.topic_events, _stream(grid_ids, start, 0))
        worker = ChildProcess("worker", mine, tmp_path / "worker.log").start()
        wait_for(lambda: _stored(mine)[0] > 0, timeout=60, what="the worker to store something")

        services.down(mine)  # ClickHouse goes away mid-stream
        await produce(mine, mine.topic_events, _stream(grid_ids, start, PER_PHASE))
        wait_for(lambda: "ClickHouse insert failed" in worker.log_tail(200), timeout=30, what="the worker to notice")
        assert worker.alive, worker.log_tail()

        services.up(mine)  # same data directory: what was stored before is still there
        both = 2 * PER_PHASE
        stored = wait_for(
            lambda: (s := _stored(mine))[0] == both and s, timeout=120, what=f"all {both} events stored", interval=0.5
        )
        assert stored == (both, both)  # every event once, and every event once in the windows
        assert worker.alive

        # SIGTERM while the worker is waiting out ClickHouse: it stops promptly, without committing the batch
        services.down(mine)
        await produce(mine, mine.topic_events, _stream(grid_ids, start, 2 * PER_PHASE))
        failures = worker.log_tail(400).count("ClickHouse insert failed")
        wait_for(lambda: worker.log_tail(400).count("ClickHouse insert failed") > failures, timeout=30,
                 what="the worker to retry again")  # fmt: skip
        # within the 5 s the worker promises in every state (pingan.streams.stopping)
        log.info("SIGTERM to exit while waiting out ClickHouse: %.1fs", worker.stop_seconds(5.0))
    finally:
        if worker is not None:
            worker.stop()
        services.down(mine)
