"""The Faust worker: a thin I/O shell around :func:`streams.pipeline.process_batch`.

Per batch (``stream.take_events``), for each input partition in it:
1. process the records (pure): events, dead letters, late events, reroutes, window rows, risk updates and
   checkpoint records come back;
2. write events, dead letters, windows and risk to ClickHouse, retrying until ClickHouse takes them;
3. publish dead letters, late events, reroutes and risk updates, and wait for the broker's acks;
4. write the checkpoint records to the window-state changelog (one record per touched bucket).
Only then does the batch return, and only then does Faust acknowledge its offsets. A crash anywhere
before that replays the batch; the per-bucket offsets in the checkpoint make the replay count nothing
twice, and every ClickHouse row is keyed so that a replay stores it once.

Nothing in the batch may raise out of the agent: Faust would acknowledge the batch anyway and its events
would be lost. Bad records become dead letters in the pipeline; storage and broker failures are retried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import faust
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import EventT
from pydantic import BaseModel

from pingan.clock import Clock, SystemClock
from pingan.errors import StorageError
from pingan.grids import GridRegistry
from pingan.partitioning import partition_for_key
from pingan.settings import Settings
from pingan.store import alerts, dead_letters, events, risk, windows
from pingan.store.client import DriverExecutor, connect
from schemas.payloads import SOURCE_PAYLOADS
from streams.baseline import BaselineModel
from streams.pipeline import BatchResult, PipelineConfig, Record, process_batch
from streams.risk_index import IndexConfig
from streams.windows import PartitionState, WindowSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_TABLE = "window-state"


class StorageWriter:
    """Owns one ClickHouse client on one thread (clients are neither thread-safe nor async)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._executor: DriverExecutor | None = None

    def _client(self) -> DriverExecutor:
        if self._executor is None:
            self._executor = connect(self._settings)
        return self._executor

    def _write(self, results: Sequence[BatchResult], ingested_at: Any) -> None:
        client = self._client()
        try:
            events.insert(
                client,
                (
                    events.row(e, partition=r.partition, offset=r.offset, late=late, ingested_at=ingested_at)
                    for result in results
                    for e, r, late in result.stored
                ),
            )
            dead_letters.insert(
                client,
                (dead_letters.row(d, ingested_at=ingested_at) for res in results for d in res.dead_letters),
            )
            windows.insert(client, [row for result in results for row in result.window_rows])
            risk.insert(client, [update for result in results for update in result.risk_updates])
            alerts.insert(client, [alert for result in results for alert in result.alerts])
        except StorageError:
            # The connection may be half-broken; the next attempt starts from a fresh client.
            client.close()
            self._executor = None
            raise

    async def write(self, results: Sequence[BatchResult], ingested_at: Any) -> None:
        loop = asyncio.get_running_loop()
        await retry_forever(
            "ClickHouse insert", lambda: loop.run_in_executor(self._thread, self._write, results, ingested_at)
        )

    def close(self) -> None:
        if self._executor is not None:
            self._thread.submit(self._executor.close).result()
        self._thread.shutdown(wait=True)


async def retry_forever(what: str, attempt: Callable[[], Awaitable[T]], *, max_delay: float = 10.0) -> T:
    """Retry with capped exponential backoff: waiting is always better than acknowledging lost events."""
    delay = 0.2
    failures = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:  # storage and broker errors come in many classes; all are worth a retry
            failures += 1
            log.warning("%s failed (%d in a row), retrying in %.1fs: %r", what, failures, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def _to_record(event: EventT) -> Record:
    message = event.message
    timestamp = message.timestamp
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value if message.value is not None else b"",
        timestamp_ms=int(timestamp * 1000) if timestamp else None,
    )


class Worker:
    """Per-partition window state plus the writes of one batch."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        grids: GridRegistry,
        index: IndexConfig,
        *,
        clock: Clock,
        payload_models: Mapping[str, type[BaseModel]] | None = None,
        baseline: BaselineModel | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.grids = grids
        self.clock = clock
        self.spec = WindowSpec(
            settings.window_seconds, settings.hop_window_seconds, settings.allowed_lateness_seconds, index.quiet_windows
        )
        self.pipeline = PipelineConfig(
            index=index,
            partitions=settings.topic_partitions,
            max_event_bytes=settings.max_event_bytes,
            max_future=timedelta(seconds=settings.max_future_seconds),
            payload_models=dict(SOURCE_PAYLOADS if payload_models is None else payload_models),
            baseline=baseline,
        )
        self.storage = StorageWriter(settings)
        self.states: dict[int, PartitionState] = {}
        self.table: Any = None
        self.processed = 0
        self.batches = 0
        # Where batch time goes, reported with the progress log: the first place to look when tuning.
        self.stage_seconds: dict[str, float] = defaultdict(float)
        self.started = time.monotonic()

    def forget(self, partitions: set[int]) -> None:
        """Drop in-memory state of partitions this worker no longer owns (reloaded if they come back)."""
        for partition in partitions:
            self.states.pop(partition, None)

    def state_for(self, partition: int) -> PartitionState:
        state = self.states.get(partition)
        if state is None:
            state = PartitionState(self.spec)
            prefix = f"{partition}|".encode()
            state.restore(
                (key[len(prefix) :].decode(), value)
                for key, value in list(self.table.data.items())
                if key.startswith(prefix) and value is not None
            )
            log.info(
                "partition %d: restored %d grids, watermark %d",
                partition,
                len(state.buckets),
                state.watermark_ms,
            )
            self.states[partition] = state
        return state

    async def handle(self, batch: Sequence[EventT]) -> None:
        try:
            await self._handle(batch)
        except Exception:
            # Returning would let Faust acknowledge the batch and lose it. Dying without committing makes
            # the restarted worker replay it; the checkpoint offsets keep that replay exact.
            log.critical("unrecoverable error in a batch; exiting without committing its offsets", exc_info=True)
            logging.shutdown()
            os._exit(70)

    async def _handle(self, batch: Sequence[EventT]) -> None:
        started = time.perf_counter()
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for event in batch:
            record = _to_record(event)
            by_partition[record.partition].append(record)
        now = self.clock.now()
        results = []
        for partition, records in sorted(by_partition.items()):
            records.sort(key=lambda r: r.offset)
            result = process_batch(records, self.state_for(partition), self.grids, self.pipeline, now=now)
            for first, last in result.gaps:
                log.error("partition %d: offsets %d-%d were never delivered to the worker", partition, first, last)
            results.append((partition, result))
        processed = time.perf_counter()
        await self.storage.write([r for _, r in results], now)
        stored = time.perf_counter()
        await retry_forever("publish", lambda: self._publish([r for _, r in results]))
        published = time.perf_counter()
        await retry_forever("checkpoint", lambda: self._checkpoint(results))
        self.processed += len(batch)
        self.batches += 1
        self.stage_seconds["process"] += processed - started
        self.stage_seconds["store"] += stored - processed
        self.stage_seconds["publish"] += published - stored
        self.stage_seconds["checkpoint"] += time.perf_counter() - published

    async def _publish(self, results: Sequence[BatchResult]) -> None:
        settings = self.settings
        producer = self.app.producer
        pending: list[Awaitable[Any]] = []
        for result in results:
            for letter in result.dead_letters:
                headers = [
                    ("pingan-error-kind", letter.kind.encode()),
                    ("pingan-error-field", letter.field.encode()),
                    ("pingan-error-reason", letter.reason.encode()[:2000]),
                    ("pingan-origin", f"{letter.topic}/{letter.partition}/{letter.offset}".encode()),
                ]
                pending.append(await producer.send(settings.topic_dead_letters, None, letter.raw, None, None, headers))
            for event in result.late:
                key = (event.grid_id or "").encode()
                pending.append(await producer.send(settings.topic_late, key, event.to_json(), None, None, None))
            for grid_id, record in result.reroutes:
                key = grid_id.encode()
                partition = partition_for_key(key, settings.topic_partitions)
                headers = [("pingan-rerouted-from", f"{record.partition}/{record.offset}".encode())]
                pending.append(await producer.send(settings.topic_events, key, record.value, partition, None, headers))
            for update in result.risk_updates:
                key = update.grid_id.encode()
                pending.append(await producer.send(settings.topic_risk, key, update.to_json(), None, None, None))
            for alert in result.alerts:
                key = alert.grid_id.encode()
                pending.append(await producer.send(settings.topic_alerts, key, alert.to_json(), None, None, None))
        if pending:
            await asyncio.gather(*pending)

    async def _checkpoint(self, results: Sequence[tuple[int, BatchResult]]) -> None:
        """Write each partition's checkpoint records to the changelog partition of its input partition.

        Order matters (see PartitionState.checkpoint): updates, then the watermark, then deletions. The
        watermark goes in a produce request of its own: Tansu reports a partition's end as the first offset of
        its last request + 1, so Faust's recovery stops there and would miss the rest of that request. Alone,
        the watermark of the last completed batch is always recovered. Faust flushes its producer before it
        commits offsets, so a committed offset implies its checkpoint is in the changelog.
        """
        marks = []
        for partition, result in results:
            records = result.checkpoint
            mark = next(i for i, (key, _) in enumerate(records) if key == "wm")
            for key, value in records[:mark]:
                self._send_checkpoint(partition, key, value)
            marks.append((partition, records[mark], records[mark + 1 :]))
        await self.app.producer.flush()
        for partition, (key, value), _ in marks:
            self._send_checkpoint(partition, key, value)
        await self.app.producer.flush()
        for partition, _, deletions in marks:
            for key, value in deletions:
                self._send_checkpoint(partition, key, value)

    def _send_checkpoint(self, partition: int, key: str, value: bytes | None) -> None:
        full_key = f"{partition}|{key}".encode()
        if value is None:
            self.table.data.pop(full_key, None)
        else:
            self.table.data[full_key] = value
        self.table.send_changelog(partition, full_key, value)


def rewinding_consumer(topic: str) -> type[faust_kafka.Consumer]:
    """Faust's Kafka consumer, made to re-read from the beginning the partitions of ``topic`` that were never
    committed, each time partitions are (re)assigned.

    After a rebalance Faust seeks every partition to its committed offset, but aiokafka seeks only to
    offsets > 0, so a never-committed partition keeps its fetch position. Records fetched in the previous
    generation and dropped undelivered by the rebalance (Faust advances its read offset past them) were then
    never fetched again: the SIGKILL test lost 311 records of a partition the killed worker had not reached.
    Re-reading from the beginning is always safe here: the checkpoint's offsets skip what is already done.
    """

    class Consumer(faust_kafka.Consumer):
        async def perform_seek(self) -> None:
            await super().perform_seek()
            never_committed = sorted(
                tp for tp in self.assignment() if tp.topic == topic and not self._committed_offset.get(tp)
            )
            if never_committed:
                log.info("partitions %s of %s have no committed offset: reading them from the beginning",
                         [tp.partition for tp in never_committed], topic)  # fmt: skip
                for tp in never_committed:
                    await self.seek(faust_kafka.ensure_aiokafka_TP(tp), 0)

    return Consumer


def create_app(
    settings: Settings,
    grids: GridRegistry,
    index: IndexConfig,
    *,
    clock: Clock | None = None,
    payload_models: Mapping[str, type[BaseModel]] | None = None,
    baseline: BaselineModel | None = None,
) -> tuple[faust.App, Worker]:
    """The Faust app and its worker; nothing connects until the app starts."""
    app = faust.App(
        settings.worker_id,
        broker=[f"kafka://{hostport}" for hostport in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "faust" / settings.worker_id),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # A restarted worker rejoins its group quickly instead of waiting out a 30 s default.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        stream_buffer_maxsize=max(settings.batch_max_events * 2, 4096),
        web_enabled=False,
        # Faust waits 3 s after each rebalance by default; nothing here needs that pause.
        stream_recovery_delay=0.0,
        producer_acks=-1,
    )
    app.transport.Consumer = rewinding_consumer(settings.topic_events)
    events_topic = app.topic(
        settings.topic_events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    table = app.Table(
        STATE_TABLE,
        default=None,
        partitions=settings.topic_partitions,
        # bytes in and out: Faust picks the changelog's serializers from these types (its schema is ignored there).
        key_type=bytes,
        value_type=bytes,
    )
    worker = Worker(
        app, settings, grids, index, clock=clock or SystemClock(), payload_models=payload_models, baseline=baseline
    )
    worker.table = table

    @app.agent(events_topic, name="risk-index")
    async def risk_index_agent(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_max_events, within=settings.batch_within_seconds):
            await worker.handle(batch)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        worker.forget({tp.partition for tp in revoked if tp.topic == settings.topic_events})

    @app.timer(interval=settings.progress_log_seconds)
    async def report_progress() -> None:
        elapsed = time.monotonic() - worker.started
        stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in worker.stage_seconds.items())
        log.info("processed %d records in %d batches in %.0fs (%s)", worker.processed, worker.batches, elapsed, stages)

    return app, worker
