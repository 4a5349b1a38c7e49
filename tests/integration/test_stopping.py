"""SIGTERM stops a worker promptly whatever it is doing, and loses nothing: a healthy worker stops gracefully (its
offsets committed, the stop deadline unused), and one restoring its window state from a long changelog stops
within 5 s, after which a restarted worker stores every event once. Joining the group and a broker that is gone
are in test_broker_restart.py, waiting out ClickHouse in test_clickhouse_restart.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pingan.grids import GridRegistry
from pingan.settings import Settings
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.streams.app import STATE_TABLE
from pingan.topics import ensure_topics
from tests.support.events import call110
from tests.support.kafka import produce
from tests.support.processes import ChildProcess, wait_for
from tests.support.stored import distinct_events

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

STOP_WITHIN_S = 5.0
PER_PHASE = 1200
# Changelog records to restore before the worker can start: a few seconds of Faust's recovery on this machine.
CHANGELOG_RECORDS = 150_000
DEADLINE_FIRED = "did not stop within"


def _events(grid_ids: list[str], start: datetime, first: int) -> list[tuple[bytes, bytes]]:
    messages = []
    for i in range(first, first + PER_PHASE):
        grid_id = grid_ids[i % len(grid_ids)]
        messages.append((grid_id.encode(), orjson.dumps(call110(f"st-{i}", grid_id, start + timedelta(seconds=i)))))
    return messages


async def _lengthen_changelog(settings: Settings) -> None:
    """Make the worker's changelog long: deletions of a key no state has, many times over, so a restore reads them
    all and ends with the state it had."""
    topic = f"{settings.worker_id}-{STATE_TABLE}-changelog"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        partitions = settings.topic_partitions
        pending = [await producer.send(topic, None, key=f"{i % partitions}|filler".encode(), partition=i % partitions)
                   for i in range(CHANGELOG_RECORDS)]  # fmt: skip
        for sent in pending:
            await sent
    finally:
        await producer.stop()


async def _committed(settings: Settings) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.worker_id,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(settings.topic_events, p))
                for p in range(settings.topic_partitions)}  # fmt: skip
    finally:
        await consumer.stop()


async def test_sigterm_stops_a_healthy_worker_gracefully_and_one_restoring_its_state_promptly(
    settings: Settings, tmp_path
) -> None:
    mine = settings.model_copy(update={
        "worker_id": f"w-{settings.topic_prefix}", "batch_within_seconds": 0.1, "heartbeat_seconds": 0,
    })  # fmt: skip
    grid_ids = [g.grid_id for g in GridRegistry.load(mine.grid_registry_path).grids[:40]]
    start = datetime.now(UTC) - timedelta(hours=2)
    prepare_database(mine)
    await ensure_topics(mine)
    await produce(mine, mine.topic_events, _events(grid_ids, start, 0))
    children: list[ChildProcess] = []
    db = connect(mine)
    try:
        healthy = ChildProcess("worker", mine, tmp_path / "healthy.log").start()
        children.append(healthy)
        wait_for(lambda: distinct_events(mine) == PER_PHASE, timeout=90, what="the first events stored")
        graceful = healthy.stop_seconds(STOP_WITHIN_S)
        assert DEADLINE_FIRED not in healthy.log_path.read_text(errors="replace"), healthy.log_tail()
        # The last commit of a graceful stop: every partition committed past the last record it stored.
        stored_to = dict(db.query("SELECT kafka_partition, max(kafka_offset) + 1 FROM events GROUP BY kafka_partition"))
        assert await _committed(mine) == stored_to

        await _lengthen_changelog(mine)
        await produce(mine, mine.topic_events, _events(grid_ids, start, PER_PHASE))
        restoring = ChildProcess("worker", mine, tmp_path / "restoring.log").start()
        children.append(restoring)
        wait_for(lambda: "Restoring state from changelog" in restoring.log_tail(200), timeout=60,
                 what="the changelog recovery", interval=0.02)  # fmt: skip
        assert "Done reading from changelog" not in restoring.log_tail(200), "restored already: make it longer"
        recovering = restoring.stop_seconds(STOP_WITHIN_S)
        log.info("SIGTERM to exit: healthy %.1fs, restoring the changelog %.1fs", graceful, recovering)

        after = ChildProcess("worker", mine, tmp_path / "after.log").start()
        children.append(after)
        wait_for(lambda: distinct_events(mine) == 2 * PER_PHASE, timeout=90, what="every event stored")
        # Each event once in the windows too: the interrupted restore neither lost nor repeated any.
        wait_for(lambda: db.query("SELECT sum(events) FROM grid_windows FINAL")[0][0] == 2 * PER_PHASE, timeout=30,
                 what="the windows holding every event once")  # fmt: skip
    finally:
        for child in children:
            child.stop()
        db.close()
