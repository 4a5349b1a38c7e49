"""The local broker restarts mid-stream and comes back empty (Tansu keeps topics in memory): the worker must
notice, say so where /readyz and /metrics show it, store every event produced after the restart without being
restarted itself, and keep the map right: once the window state is rebuilt, windows and risk equal those of an
undisturbed worker over the same events.

Two losses, one test (each broker restart costs seconds):
1. the broker restarts under a running worker: its committed offsets and checkpoint are beyond the new log
   ("log_lost"); the worker still has the window state in memory ("kept");
2. the worker is stopped, the broker restarts, a new worker starts: neither checkpoint nor committed offsets
   survived to tell, but ClickHouse holds the partitions' events ("state_lost"): the window state is replayed
   from ClickHouse ("clickhouse").
A reference worker reads all the events in one undisturbed log into a database of its own meanwhile.

On the way, on the same services: SIGTERM stops a healthy worker gracefully (its stop deadline does not fire),
and stops a worker within 5 s while it is joining the group (a rebalance) and while the broker is gone (fetches,
heartbeats and commits failing). A graceful stop that would take longer is cut short by
pingan.streams.stopping.PromptWorker, which loses nothing. Waiting out ClickHouse is in test_clickhouse_restart.py,
changelog recovery in test_stopping.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnknownError
from prometheus_client.parser import text_string_to_metric_families

from pingan import services
from pingan.api.app import create_app
from pingan.grids import GridRegistry
from pingan.settings import Settings
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics, recreate_changelog
from tests.support.events import call110
from tests.support.kafka import produce
from tests.support.multi_worker import differences, results
from tests.support.processes import ChildProcess, wait_for
from tests.support.stored import distinct_events

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

PER_PHASE = 1500
# The acceptance bound: every event produced after the restart is stored within this, with no manual restart.
STORED_WITHIN_S = 60
STOP_WITHIN_S = 5.0


def _stream(grid_ids: list[str], start: datetime, first: int, count: int = PER_PHASE) -> list[tuple[bytes, bytes]]:
    """Events a second apart over a few grids, with bursts on the first grids so that the map leaves green."""
    messages = []
    for i in range(first, first + count):
        grid_id = grid_ids[0 if i % 4 == 0 else 1 if i % 9 == 0 else i % len(grid_ids)]
        at = start + timedelta(seconds=i)
        messages.append((grid_id.encode(), orjson.dumps(call110(f"br-{i}", grid_id, at, "criminal", 3))))
    return messages


def _by_partition(settings: Settings) -> list[tuple]:
    executor = connect(settings)
    try:
        return executor.query(
            "SELECT kafka_partition, uniqExact(event_id), min(kafka_offset), max(kafka_offset) FROM events "
            "GROUP BY kafka_partition ORDER BY kafka_partition"
        )
    finally:
        executor.close()


def _stored_within(settings: Settings, expected: int, worker: ChildProcess, what: str) -> float:
    started = time.monotonic()
    try:
        wait_for(lambda: distinct_events(settings) == expected, timeout=STORED_WITHIN_S, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; stored per partition (events, first, last offset): {_by_partition(settings)}"
                             f"\n{worker.log_tail(30)}") from None  # fmt: skip
    return time.monotonic() - started


class Api:
    """The API over the test's services, in-process, for /readyz and /metrics."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings, registry=GridRegistry.load(settings.grid_registry_path))

    async def get(self, path: str) -> httpx.Response:
        async with self.app.router.lifespan_context(self.app):
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.get(path)

    async def losses(self) -> dict[str, Any]:
        response = await self.get("/readyz")
        assert response.status_code == 200, response.text
        return response.json()["checks"]["worker"]

    async def loss_metrics(self) -> dict[tuple[str, str, str], tuple[float, float]]:
        text = (await self.get("/metrics")).text
        samples: dict[str, dict[tuple[str, str, str], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name.startswith("pingan_worker_log_loss"):
                    key = (labels["topic"], labels["partition"], labels["reason"])
                    samples.setdefault(sample.name, {})[key] = sample.value
        detected, rebuilding = (
            samples.get("pingan_worker_log_losses", {}),
            samples.get("pingan_worker_log_loss_rebuilding", {}),
        )
        return {key: (count, rebuilding.get(key, 0.0)) for key, count in detected.items()}


async def _poll(probe: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """wait_for for an async probe."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


async def test_a_broker_that_comes_back_empty_loses_no_later_event_and_the_map_is_rebuilt(
    settings: Settings, tmp_path
) -> None:
    kafka_port, _ = services.free_loopback_ports(2)
    mine = settings.model_copy(
        update={
            "data_dir": tmp_path / "services",
            "kafka_bootstrap": f"127.0.0.1:{kafka_port}",
            "kafka_managed": True,
            "clickhouse_managed": False,
            "worker_id": f"w-{settings.topic_prefix}",
            "batch_within_seconds": 0.1,
            # No heartbeats: they carry each worker's clock into its results, and the reference has another.
            "heartbeat_seconds": 0,
        }
    )
    reference = mine.model_copy(update={
        "worker_id": f"w-{settings.topic_prefix}ref", "topic_prefix": f"{settings.topic_prefix}ref.",
        "clickhouse_database": f"{settings.clickhouse_database}_ref", "data_dir": tmp_path / "reference",
    })  # fmt: skip
    registry = GridRegistry.load(mine.grid_registry_path)
    grid_ids = [g.grid_id for g in registry.grids[:20]]
    start = datetime.now(UTC) - timedelta(hours=2)  # 6,000 events a second apart: all in the past
    phases = [_stream(grid_ids, start, 0), _stream(grid_ids, start, PER_PHASE, 2 * PER_PHASE),
              _stream(grid_ids, start, 3 * PER_PHASE)]  # fmt: skip
    # The API only reports here: its writer of unacknowledged-incident alerts would add rows the reference lacks.
    api = Api(mine.model_copy(update={"incident_check_seconds": 0}))
    services.up(mine)
    workers: list[ChildProcess] = []
    try:
        prepare_database(mine)
        prepare_database(reference)
        await ensure_topics(mine)
        await produce(mine, mine.topic_events, phases[0])
        workers.append(ChildProcess("worker", mine, tmp_path / "worker.log").start())
        wait_for(lambda: distinct_events(mine) == PER_PHASE, timeout=90, what="the first phase stored")
        assert (await api.losses())["log_losses"]["detected"] == []

        # 1. The broker restarts under the running worker.
        services.down(mine)  # the broker only: this test's ClickHouse is the session's
        services.up(mine)  # back, empty
        await ensure_topics(mine)  # what `pingan services up` and the producers' own start-up do
        # More records than before the restart: the new log is longer than the old one was, so only the record
        # the checkpoint ended on (missing or different now) can tell that it is another log
        await produce(mine, mine.topic_events, phases[1])
        first_recovery = _stored_within(mine, 3 * PER_PHASE, workers[0], "every event after the restart stored")
        assert workers[0].alive
        assert "the log was lost" in workers[0].log_path.read_text(errors="replace")
        worker = await api.losses()
        lost = worker["log_losses"]["detected"]
        assert lost and {loss["reason"] for loss in lost} == {"log_lost"}, lost
        assert all(loss["rebuilt"] and loss["rebuilt_from"] == "kept" for loss in lost), lost
        # The old offsets were beyond the new log's end when it was found (or the record there differed).
        assert all(loss["done_offset"] > 0 and loss["restart_offset"] == 0 for loss in lost), lost
        assert worker["status"] != "rebuilding" and worker["log_losses"]["rebuilding"] == 0
        first_partitions = {loss["partition"] for loss in lost}

        # 2. The broker restarts while the worker is down: a new worker finds nothing on the broker to tell.
        # (A healthy worker stops gracefully: its stop deadline does not fire.)
        healthy = workers[0].stop_seconds(STOP_WITHIN_S)
        assert "did not stop within" not in workers[0].log_path.read_text(errors="replace"), workers[0].log_tail()
        services.down(mine)
        services.up(mine)
        await ensure_topics(mine)
        await ensure_topics(reference)
        workers.append(ChildProcess("worker", mine, tmp_path / "worker-after.log").start())
        workers.append(ChildProcess("worker", reference, tmp_path / "reference.log").start())
        await produce(reference, reference.topic_events, [m for phase in phases for m in phase])
        await produce(mine, mine.topic_events, phases[2])
        second_recovery = _stored_within(mine, 4 * PER_PHASE, workers[1], "every event after the second restart")
        assert "window state rebuilt from" in workers[1].log_path.read_text(errors="replace")

        async def rebuilt_from_clickhouse() -> list[dict[str, Any]]:
            found = (await api.losses())["log_losses"]["detected"]
            return [loss for loss in found if loss["reason"] == "state_lost"]

        state_lost = await _poll(rebuilt_from_clickhouse, timeout=10, what="the state_lost record")
        assert all(loss["rebuilt_from"] == "clickhouse" and loss["rebuilt_events"] > 0 for loss in state_lost)
        counted = await api.loss_metrics()
        assert {p for (_, p, reason) in counted if reason == "log_lost"} == {str(p) for p in first_partitions}
        assert {p for (_, p, reason) in counted if reason == "state_lost"} == {str(x["partition"]) for x in state_lost}
        assert all(rebuilding == 0 for _, rebuilding in counted.values())

        # The map matches the undisturbed run once the rebuild is done.
        wait_for(
            lambda: distinct_events(reference) == 4 * PER_PHASE, timeout=90, what="the reference stored everything"
        )
        mine_db, reference_db = connect(mine), connect(reference)
        try:
            compared = ("windows", "risk", "alerts")

            def same() -> bool:
                a, b = results(mine_db), results(reference_db)
                return all(a[name] == b[name] for name in compared)

            try:
                wait_for(same, timeout=30, what="the same windows, risk and alerts as the undisturbed run")
            except AssertionError:
                diff = differences(results(mine_db), results(reference_db))
                raise AssertionError({name: diff.get(name) for name in compared}) from None
            risk = results(mine_db)["risk"]
            assert risk and {row[3] for row in risk} - {"green"}, "the stream never leaves green: make it busier"
        finally:
            mine_db.close()
            reference_db.close()
        log.info("stored after the restart within %.1fs, after the second within %.1fs", first_recovery,
                 second_recovery)  # fmt: skip

        # SIGTERM while rebalancing: another member is joining the group (the running worker rejoins meanwhile).
        joiner = ChildProcess("worker", mine.model_copy(update={"data_dir": tmp_path / "joiner"}), tmp_path / "j.log")
        workers.append(joiner.start())
        wait_for(lambda: "(Re-)joining group" in joiner.log_tail(200), timeout=60, what="the new member joining")
        assert "Successfully synced group" not in joiner.log_tail(200), "joined already: no rebalance to stop in"
        rebalancing = joiner.stop_seconds(STOP_WITHIN_S)
        # SIGTERM with the broker gone.
        services.down(mine)
        wait_for(lambda: "Connect call failed" in workers[1].log_tail(50), timeout=30, what="the worker missing it")
        broker_gone = workers[1].stop_seconds(STOP_WITHIN_S)
        log.info("SIGTERM to exit: healthy %.1fs, rebalancing %.1fs, broker gone %.1fs", healthy, rebalancing,
                 broker_gone)  # fmt: skip
    finally:
        for worker_process in workers:
            worker_process.stop()
        services.down(mine)


async def _send_all(producer: AIOKafkaProducer, topic: str, values: list[bytes]) -> list[int | str]:
    """Each value's offset, or the name of the error the broker answered."""
    sent: list[int | str] = []
    for value in values:
        try:
            sent.append((await (await producer.send(topic, value, partition=0))).offset)
        except UnknownError as exc:
            sent.append(type(exc).__name__)
    return sent


async def _log(settings: Settings, topic: str) -> list[bytes | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        return [record.value for record in (await consumer.getmany(tp, timeout_ms=2000)).get(tp, [])]
    finally:
        await consumer.stop()


async def test_a_changelog_created_again_holds_none_of_the_records_sent_to_it_before(settings: Settings) -> None:
    """Tansu takes records for a topic it does not have (a producer whose metadata still lists the topic of a
    broker that came back empty sends them). Creating the topic then restarts its offsets without removing them:
    the next writes collide with them (UNKNOWN_SERVER_ERROR) and the log mixes them with the new records.
    recreate_changelog deletes the changelog on the local broker, which removes them."""
    name = f"{settings.topic_prefix}w-window-state-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await admin.start()
    await producer.start()
    try:
        for topic in (name, f"{name}-plain"):  # the changelog, and a topic created the plain way
            await admin.create_topics([NewTopic(topic, settings.topic_partitions, 1)])
            await (await producer.send(topic, b"known", partition=0))  # the producer's metadata has it now
            await admin.delete_topics([topic])  # what the broker's restart does
            assert await _send_all(producer, topic, [b"stray-0", b"stray-1", b"stray-2"]) == [0, 1, 2]
        await admin.create_topics([NewTopic(f"{name}-plain", settings.topic_partitions, 1)])
        plain = await _send_all(producer, f"{name}-plain", [b"new-0", b"new-1", b"new-2", b"new-3"])
        assert plain == ["UnknownError"] * 3 + [3], "Tansu no longer keeps such records: the changelog can stay"
        assert await _log(settings, f"{name}-plain") == [b"stray-0", b"stray-1", b"stray-2", b"new-3"]

        await recreate_changelog(settings, name)
        assert await _send_all(producer, name, [b"new-0", b"new-1", b"new-2", b"new-3"]) == [0, 1, 2, 3]
        assert await _log(settings, name) == [b"new-0", b"new-1", b"new-2", b"new-3"]
    finally:
        await producer.stop()
        await admin.close()
