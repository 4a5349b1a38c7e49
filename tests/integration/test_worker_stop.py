"""SIGTERM stops a worker within 5 s whatever it is doing: rebalancing (joining a group) and with the broker
gone (its fetches, heartbeats and commits failing). Waiting out ClickHouse is in test_clickhouse_restart.py.

A graceful stop that would take longer is cut short by streams.stopping.PromptWorker; that loses nothing (what
was not committed is read again, exactly, by the next owner of the partitions)."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan import services
from pingan.grids import GridRegistry
from pingan.settings import Settings
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from tests.support.events import call110
from tests.support.kafka import produce
from tests.support.processes import ChildProcess, wait_for
from tests.support.stored import distinct_events

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

STOP_WITHIN_S = 5.0


def _stop_seconds(child: ChildProcess) -> float:
    """SIGTERM, and the seconds until the process is gone (fails past STOP_WITHIN_S)."""
    assert child.process is not None and child.alive, child.log_tail()
    began = time.monotonic()
    child.process.send_signal(signal.SIGTERM)
    try:
        child.process.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"SIGTERM: still running after {STOP_WITHIN_S:.0f}s\n{child.log_tail()}") from None
    return time.monotonic() - began


async def test_sigterm_stops_a_worker_within_5_s_while_rebalancing_and_while_the_broker_is_gone(
    settings: Settings, tmp_path
) -> None:
    kafka_port, _ = services.free_loopback_ports(2)
    mine = settings.model_copy(update={
        "data_dir": tmp_path / "services", "kafka_bootstrap": f"127.0.0.1:{kafka_port}", "kafka_managed": True,
        "clickhouse_managed": False, "worker_id": f"w-{settings.topic_prefix}", "batch_within_seconds": 0.1,
    })  # fmt: skip
    grid_ids = [g.grid_id for g in GridRegistry.load(mine.grid_registry_path).grids[:20]]
    start = datetime.now(UTC) - timedelta(hours=1)
    stream = [(g.encode(), orjson.dumps(call110(f"st-{i}", g, start + timedelta(seconds=i))))
              for i, g in enumerate(grid_ids[i % len(grid_ids)] for i in range(2000))]  # fmt: skip
    services.up(mine)
    workers = [ChildProcess("worker", mine.model_copy(update={"data_dir": tmp_path / n}), tmp_path / f"{n}.log")
               for n in ("a", "b")]  # fmt: skip
    try:
        prepare_database(mine)
        await ensure_topics(mine)
        await produce(mine, mine.topic_events, stream)
        first, second = workers
        first.start()
        wait_for(lambda: distinct_events(mine) > 0, timeout=60, what="the first worker storing")

        # Rebalancing: the second worker is joining the group (the first is revoking and rejoining meanwhile).
        second.start()
        wait_for(lambda: "(Re-)joining group" in second.log_tail(200), timeout=60, what="the second worker joining")
        assert "Successfully synced group" not in second.log_tail(200), "joined already: no rebalance to stop in"
        rebalancing = _stop_seconds(second)

        # The broker gone: fetches, heartbeats and commits fail and are retried.
        wait_for(lambda: distinct_events(mine) == len(stream), timeout=60, what="every event stored")
        services.down(mine)
        wait_for(lambda: "Connect call failed" in first.log_tail(50), timeout=30, what="the worker missing the broker")
        broker_gone = _stop_seconds(first)
        log.info("SIGTERM to exit: rebalancing %.1fs, broker gone %.1fs", rebalancing, broker_gone)
    finally:
        for worker in workers:
            worker.stop()
        services.down(mine)
