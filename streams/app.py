"""The Faust worker: a thin I/O shell around :func:`pingan.streams.pipeline.process_batch`.

The events topic's records are taken straight from what Faust's consumer fetched (``rewinding_consumer``'s
``_getmany``), buffered in pingan.streams.feeding.FetchedRecords and handed to ``Worker.handle_taken`` in batches
by a task of the app (``feed``), never through Faust's streams; Faust keeps the group, the table and the commits.
Per batch, for each input partition in it:
1. process the records (pure): events, dead letters, late events, reroutes, window rows, risk updates and
   checkpoint records come back;
2. write events, dead letters, windows and risk to ClickHouse, retrying until ClickHouse takes them;
3. publish dead letters, late events, reroutes and risk updates, and wait for the broker's acks;
4. write the checkpoint records to the window-state changelog (one record per touched bucket).
Only then does the batch return, and only then may Faust commit its offsets. A crash anywhere
before that replays the batch; the per-bucket offsets in the checkpoint make the replay count nothing
twice, and every ClickHouse row is keyed so that a replay stores it once.

Nothing in the batch may raise out of ``handle_taken``: bad records become dead letters in the pipeline, storage
and broker failures are retried, and anything else exits the process without committing (the batch is replayed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.conn import CloseReason
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, UnknownError
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import TP

from pingan.clock import Clock, SystemClock
from pingan.dead_letter import DeadLetter, to_message
from pingan.errors import ServiceError, StorageUnavailable
from pingan.feeds import FeedRules
from pingan.grids import GridRegistry
from pingan.index.baseline import BaselineModel
from pingan.index.scoring import IndexConfig
from pingan.partitioning import partition_for_key
from pingan.schemas.payloads import SOURCE_PAYLOADS
from pingan.settings import Settings
from pingan.store import alerts, dead_letters, events, risk, windows
from pingan.store.client import DriverExecutor, connect
from pingan.streams.feeding import FetchedRecords
from pingan.streams.log_loss import LogLossKeeper
from pingan.streams.pipeline import BatchResult, PipelineConfig, Record, dead_letter_of, heartbeat_record, process_batch
from pingan.streams.windows import PartitionState, record_fingerprint, window_spec
from pingan.topics import ensure_topics, recreate_changelog

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_TABLE = "window-state"


class StorageWriter:
    """Owns one ClickHouse client on one thread (clients are neither thread-safe nor async)."""

    def __init__(self, settings: Settings, stopping: Callable[[], bool] = lambda: False) -> None:
        self._settings = settings
        self._stopping = stopping
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._executor: DriverExecutor | None = None
        self.rejected_rows = 0

    def _client(self) -> DriverExecutor:
        if self._executor is None:
            self._executor = connect(self._settings)
        return self._executor

    def _run(self, work: Callable[[DriverExecutor], None]) -> None:
        client = self._client()
        try:
            work(client)
        except StorageUnavailable:
            # The connection may be half-broken; the next attempt starts from a fresh client.
            client.close()
            self._executor = None
            raise

    def _write(self, results: Sequence[BatchResult], ingested_at: datetime, client: DriverExecutor) -> None:
        self._write_events(client, results, ingested_at)
        letters = [dead_letters.row(d, ingested_at=ingested_at) for result in results for d in result.dead_letters]
        self._report("dead_letters", dead_letters.insert(client, letters))
        rows = [row for result in results for row in result.window_rows]
        self._report("grid_windows", windows.insert(client, rows))
        decided = [u for result in results for u in result.risk_updates]
        self._report("risk", risk.insert(client, decided, [u for result in results for u in result.live_updates]))
        self._report("alerts", alerts.insert(client, [alert for result in results for alert in result.alerts]))

    def _write_events(self, client: DriverExecutor, results: Sequence[BatchResult], ingested_at: datetime) -> None:
        """Insert the events; one ClickHouse refuses becomes a dead letter of its record (it passed validation,
        so this is a gap in the checks: the reason says what ClickHouse said)."""
        stored = [(result, event, record, late) for result in results for event, record, late in result.stored]
        rows = [
            events.row(event, partition=record.partition, offset=record.offset, late=late, ingested_at=ingested_at)
            for _, event, record, late in stored
        ]
        position = {id(row): index for index, row in enumerate(rows)}
        for row, exc in events.insert(client, rows):
            result, event, record, late = stored[position[id(row)]]
            log.error("%s[%d]@%d: ClickHouse refused event %s: %s", record.topic, record.partition, record.offset,
                      event.event_id, exc)  # fmt: skip
            result.stored.remove((event, record, late))
            result.dead_letters.append(dead_letter_of(record, ingested_at, "unstorable", None, str(exc)))
            self.rejected_rows += 1

    def _report(self, table: str, rejected: Sequence[tuple[Any, Exception]]) -> None:
        """Rows the worker computed itself: one ClickHouse refuses is a bug, logged with the row, never a stall."""
        for row, exc in rejected:
            log.error("ClickHouse refused a row of %s, which is not stored: %s; row %r", table, exc, row)
            self.rejected_rows += 1

    async def write_dead_letters(self, letters: Sequence[DeadLetter], ingested_at: datetime) -> None:
        rows = [dead_letters.row(d, ingested_at=ingested_at) for d in letters]
        await self._retried(lambda client: self._report("dead_letters", dead_letters.insert(client, rows)))

    async def write(self, results: Sequence[BatchResult], ingested_at: datetime) -> None:
        await self._retried(lambda client: self._write(results, ingested_at, client))

    async def _retried(self, work: Callable[[DriverExecutor], None]) -> None:
        loop = asyncio.get_running_loop()
        await retry_transient(
            "ClickHouse insert", lambda: loop.run_in_executor(self._thread, self._run, work), (StorageUnavailable,),
            stopping=self._stopping,
        )  # fmt: skip

    async def call(self, work: Callable[[DriverExecutor], T]) -> T:
        """Run ``work`` with this writer's client on its thread, retried while ClickHouse is away."""
        done: list[T] = []
        await self._retried(lambda client: done.append(work(client)))
        return done[-1]

    def close(self) -> None:
        """Let go of ClickHouse without waiting for an insert that hangs (a stop must not wait out a timeout)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            done = self._thread.submit(executor.close)
            try:
                done.result(timeout=CLOSE_SECONDS)
            except TimeoutError:
                log.warning("ClickHouse client did not close within %.0fs; leaving it", CLOSE_SECONDS)
        self._thread.shutdown(wait=False, cancel_futures=True)


CLOSE_SECONDS = 2.0


class Abandoned(Exception):
    """The worker is stopping while a batch waits for a service: the batch is given up, never acknowledged."""


async def retry_transient(
    what: str, attempt: Callable[[], Awaitable[T]], transient: tuple[type[BaseException], ...], *,
    max_delay: float = 10.0, stopping: Callable[[], bool] = lambda: False,
) -> T:  # fmt: skip
    """Retry what can succeed later, with capped exponential backoff: waiting is always better than
    acknowledging lost events. Anything else propagates: retrying it would stall the partition forever.
    Raises Abandoned once ``stopping()``: a stop must not wait for ClickHouse or the broker to come back."""
    delay = 0.2
    failures = 0
    while True:
        try:
            return await attempt()
        except transient as exc:
            failures += 1
            if stopping():
                raise Abandoned(f"{what} failed while stopping: {exc!r}") from exc
            log.warning("%s failed (%d in a row), retrying in %.1fs: %r", what, failures, delay, exc)
            slept = 0.0
            while slept < delay and not stopping():
                await asyncio.sleep(0.1)
                slept += 0.1
            delay = min(delay * 2, max_delay)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish, and what to do if the broker refuses it for good."""

    topic: str
    key: bytes | None
    value: bytes | None  # None: a deletion (a changelog tombstone)
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None
    # For a reroute: the record, which becomes a dead letter if it cannot be re-published.
    origin: Record | None = None


def _cause(exc: BaseException) -> BaseException:
    """Faust wraps the producer's KafkaError in ProducerSendError."""
    return exc.__cause__ if isinstance(exc, ProducerSendError) and exc.__cause__ is not None else exc


def is_transient_kafka_error(exc: BaseException) -> bool:
    """aiokafka marks the errors a retry can get past (leader moved, timeouts, broker away) as retriable."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaConnectionError | KafkaTimeoutError)
    return isinstance(exc, OSError | asyncio.TimeoutError)


def is_retriable(cause: BaseException, collisions: int, *, local_broker: bool) -> bool:
    """Whether sending a message again can get past ``cause``: aiokafka's retriable errors, and on the local broker
    an UNKNOWN_SERVER_ERROR ``MAX_COLLISIONS`` times. That is how Tansu answers a write that collides with records it
    took for a topic before the topic was created (a broker that came back empty: pingan.topics.recreate_changelog);
    each failed write moves the partition's end on, so a later one lands past them. Elsewhere, and past that, it is
    an error of the broker's that a retry would only repeat."""
    if is_transient_kafka_error(cause):
        return True
    return isinstance(cause, UnknownError) and local_broker and collisions < MAX_COLLISIONS


# UNKNOWN_SERVER_ERRORs a message may meet on the local broker before it counts as refused (see is_retriable).
MAX_COLLISIONS = 8


def dead_letter_message(letter: DeadLetter, topic: str) -> Outgoing:
    """The dead-letter topic's message (pingan.dead_letter.to_message: the bytes, cut to what the broker takes,
    with the reason, origin, size and SHA-256 in headers)."""
    message = to_message(letter)
    return Outgoing(topic, None, message.value, headers=list(message.headers))


def chunked(records: Sequence[Record], max_bytes: int) -> list[list[Record]]:
    """Consecutive runs of records of at most ``max_bytes`` of values each (a larger record is a run alone)."""
    chunks: list[list[Record]] = []
    size = 0
    for record in records:
        if not chunks or (size + len(record.value) > max_bytes and chunks[-1]):
            chunks.append([])
            size = 0
        chunks[-1].append(record)
        size += len(record.value)
    return chunks


def to_records(topic: str, partition: int, fetched: Sequence[Any]) -> list[Record]:
    """aiokafka's ConsumerRecords of one partition as pipeline Records (a record's timestamp is in ms; 0 or none:
    unknown, and a null value is empty)."""
    return [Record(topic, partition, r.offset, r.key, r.value or b"", r.timestamp or None) for r in fetched]


class StateStore:
    """The worker's checkpoint records in Faust's changelog-backed table (the one place that touches it).

    Keys are ``<input partition>|<record key>`` (see PartitionState.checkpoint), values bytes. A write goes to
    the table's memory, and its changelog message (to the changelog partition of the input partition, so a worker
    that takes the partition over restores exactly these records) is returned for the worker to send and wait
    for: Faust's own ``send_changelog`` only logs a message the broker refused, and a checkpoint must not lose one.
    """

    def __init__(self, table: faust.Table) -> None:
        self._table = table

    @property
    def topic(self) -> str:
        return self._table.changelog_topic.get_topic_name()

    def records(self, partition: int) -> list[tuple[str, bytes]]:
        """The partition's records (record key, value), as recovered from the changelog or written since."""
        prefix = f"{partition}|".encode()
        return [
            (key[len(prefix) :].decode(), value)
            for key, value in list(self._table.data.items())
            if key.startswith(prefix) and value is not None
        ]

    def put(self, partition: int, key: str, value: bytes | None) -> Outgoing:
        """Write one record (``None`` deletes it) to memory; return its changelog message."""
        full_key = f"{partition}|{key}".encode()
        if value is None:
            self._table.data.pop(full_key, None)
        else:
            self._table.data[full_key] = value
        return Outgoing(self.topic, full_key, value, partition)

    async def declare(self, settings: Settings) -> None:
        """Create the changelog topic again (a broker that lost its log lost it too), empty on the local broker."""
        await recreate_changelog(settings, self.topic)


# What the worker's log says at its first records (bench/worker_throughput.py times throughput from that line).
FIRST_RECORDS = "taking records"


class Worker:
    """Per-partition window state plus the writes of one batch."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        grids: GridRegistry,
        index: IndexConfig,
        *,
        store: StateStore,
        clock: Clock,
        baseline: BaselineModel | None = None,
        rules: FeedRules | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.settings = settings
        self.grids = grids
        self.clock = clock
        self.spec = window_spec(settings, index)
        self.pipeline = PipelineConfig(index, settings.topic_partitions, baseline, rules or FeedRules(
            MappingProxyType(dict(SOURCE_PAYLOADS)), {}, settings.max_event_bytes,
            timedelta(seconds=settings.max_future_seconds),
        ))  # fmt: skip
        self.storage = StorageWriter(settings, stopping=lambda: app.should_stop)
        history = timedelta(weeks=settings.baseline_history_weeks)
        self.keeper = LogLossKeeper(settings.worker_id, settings.topic_events, self.spec, self.pipeline,
                                    self.storage.call, clock, history)  # fmt: skip
        self.refused_messages = 0
        self.last_record: dict[int, float] = {}  # partition -> time.monotonic() of its last record
        self.log_losses = 0  # partitions whose input log was found shorter than their checkpoint
        self.anchors: dict[int, tuple[int, int]] = {}  # partition -> (offset, fingerprint): see anchor
        self.rereads = 0  # times a partition was read again from a hole in what was delivered
        self.states: dict[int, PartitionState] = {}
        # Held by a batch, and by the consumer while it positions partitions (LogWatch.quiet; set by create_app).
        self.quiet = asyncio.Lock()
        self.set_aside: dict[int, PartitionState] = {}  # revoked partitions' states (see forget)
        self.processed = 0
        self.batches = 0
        # Where batch time goes, reported with the progress log: the first place to look when tuning.
        self.stage_seconds: dict[str, float] = defaultdict(float)
        self.started = time.monotonic()

    def checkpointed(self, partition: int) -> tuple[int, int]:
        """(done_offset, fingerprint of the record there) of the partition's checkpoint."""
        state = self.state_for(partition)
        return state.done_offset, state.done_fingerprint

    def anchor(self, partition: int) -> tuple[int, int]:
        """The record to check a partition's log against at an assignment: the first done point this process saw
        since the last check, else the checkpoint's. A broker that came back empty is fetched from the old
        position until the group notices: records of the new log then follow the old ones, and the checkpoint's
        own record is one of the new log's; an older one tells the logs apart."""
        return self.anchors.get(partition) or self.checkpointed(partition)

    def log_checked(self, partitions: Sequence[int]) -> None:
        """These partitions' logs are the ones their state was built from: check from their done points on."""
        for partition in partitions:
            self.anchors.pop(partition, None)

    async def on_log_lost(self, lost: dict[int, tuple[int, int]]) -> None:
        """The input log of these partitions began again (see rewinding_consumer): recreate the topics that went
        with it, and restart the partitions' offsets. What was counted stays counted (duplicates are then told by
        event id), and the whole state goes to the changelog at the next checkpoint (it may be gone too)."""
        self.log_losses += len(lost)
        await ensure_topics(self.settings)
        await self.store.declare(self.settings)
        for partition in lost:
            self.state_for(partition).restart_log()
        self.log_checked(list(lost))  # the new log is checked from its own done points on
        await self.keeper.log_lost(lost, self.states)

    async def prepare(self, partitions: Sequence[int]) -> None:
        """Restore the state of newly assigned partitions, rebuilt from ClickHouse where it was lost."""
        for partition in partitions:
            if partition not in self.states:
                self.states[partition] = await self.keeper.restored(partition, self.state_for(partition))

    def forget(self, partitions: set[int]) -> None:
        """Set aside the state of partitions this worker no longer owns: if one comes back, the changelog says
        where it is now (another worker may have moved it on), unless the changelog lost its log too."""
        for partition in partitions:
            state = self.states.pop(partition, None)
            if state is not None:
                self.set_aside[partition] = state

    def state_for(self, partition: int) -> PartitionState:
        state = self.states.get(partition)
        if state is None:
            state = PartitionState(self.spec)
            state.restore(self.store.records(partition))
            kept = self.set_aside.pop(partition, None)
            if kept is not None and state.done_offset < 0 <= kept.done_offset:
                # Nothing in the changelog, though this worker had done records here: the changelog's log was
                # lost (a broker that came back empty). The state this worker had is the best there is.
                log.error("partition %d: the changelog holds nothing, but %d records were done here; keeping "
                          "the state this worker had (%d grids)", partition, kept.done_offset + 1,
                          len(kept.buckets))  # fmt: skip
                state = kept
            log.info("partition %d: restored %d grids, watermark %d, done offset %d, %d records left over",
                     partition, len(state.buckets), state.watermark_ms, state.done_offset,
                     len(state.garbage))  # fmt: skip
            self.states[partition] = state
        return state

    async def handle_taken(self, take: Callable[[], Sequence[Record]]) -> dict[int, int]:
        """Process and write the batch ``take()`` returns (consumed records of any partitions, in any order); return
        only when every write is acknowledged, or exit the process without returning (its offsets must not be
        committed). The batch is taken once this worker's lock is held: no positioning runs then (LogWatch.quiet),
        so it holds nothing fetched before a partition's last seek. Returns, per
        partition of the batch, the offset before which its checkpoint has done every record (done_offset + 1):
        what may be committed. A hole stops a partition at done_offset (see _handle_round), so this never passes
        one, and a partition whose log began again meanwhile (done_offset -1) has nothing to commit."""
        try:
            async with self.quiet:
                records = take()
                if records:
                    await self._handle(records)
                done = {}
                for partition in {record.partition for record in records}:
                    state = self.states.get(partition)
                    if state is not None and state.done_offset >= 0:
                        done[partition] = state.done_offset + 1
                return done
        except Abandoned as exc:
            # Returning would let the batch's offsets be committed. Its writes may be partial: the restarted worker
            # replays it from the checkpoint, exactly. Waiting for the service would hold the stop forever.
            log.warning("stopping with a batch unfinished (%s); it is replayed after the restart", exc)
            self.storage.close()
            logging.shutdown()
            os._exit(0)
        except Exception:
            # Returning would let the batch's offsets be committed, and lose it. Dying without committing makes
            # the restarted worker replay it; the checkpoint offsets keep that replay exact.
            log.critical("unrecoverable error in a batch; exiting without committing its offsets", exc_info=True)
            logging.shutdown()
            os._exit(70)

    async def _handle(self, batch: Sequence[Record]) -> None:
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for record in batch:
            by_partition[record.partition].append(record)
        for records in by_partition.values():
            records.sort(key=lambda r: r.offset)
        # A take of event batch records can hold hundreds of thousands of events: it is processed and written in
        # rounds of at most batch_max_bytes of records per partition, each stored, published and checkpointed
        # before the next (a crash between rounds replays from the last checkpoint, like between batches).
        # Processing the next round while the writer's thread stores one was tried and measured slower on 2 cores
        # (300,000 events: 8,100-8,200 events/s against 9,400-10,600; processing 20 s -> 30 s): the store's row
        # building holds the GIL, and ClickHouse and the broker share the same cores.
        chunks = {p: chunked(records, self.settings.batch_max_bytes) for p, records in sorted(by_partition.items())}
        stopped: set[int] = set()  # partitions a hole stopped: the rest of their records is read again later
        for round_ in range(max(len(c) for c in chunks.values())):
            await self._handle_round({p: c[round_] for p, c in chunks.items() if round_ < len(c)}, stopped)

    async def _handle_round(self, by_partition: Mapping[int, list[Record]], stopped: set[int]) -> None:
        if not self.batches:
            # Start-up (Faust, the group join, restoring the table) is over: what follows is throughput.
            log.info(
                "%s: first records taken %.1fs after the worker started", FIRST_RECORDS, time.monotonic() - self.started
            )
        started = time.perf_counter()
        now = self.clock.now()
        results = []
        for partition, records in by_partition.items():
            if partition in stopped:
                continue
            self.last_record[partition] = time.monotonic()
            result = process_batch(records, self.state_for(partition), self.grids, self.pipeline, now=now)
            results.append((partition, result))
            if partition not in self.anchors and result.checkpoint:
                self.anchors[partition] = self.checkpointed(partition)
        processed = time.perf_counter()
        await self.storage.write([r for _, r in results], now)
        stored = time.perf_counter()
        await self._publish([r for _, r in results], now)
        published = time.perf_counter()
        await self._checkpoint(results)
        for partition, result in results:
            for first, last in result.gaps:
                # Faust skipped these (it does around rebalances); the rest of the batch was not processed either.
                log.error("partition %d: offsets %d-%d were not delivered; reading the partition again from %d",
                          partition, first, last, first)  # fmt: skip
                self.rereads += 1
                stopped.add(partition)
                consumer = self.app.consumer
                assert isinstance(consumer, faust_kafka.Consumer)
                await consumer.seek_in_thread(TP(self.settings.topic_events, partition), first)
        self.processed += sum(len(records) for records in by_partition.values())
        self.batches += 1
        self.stage_seconds["process"] += processed - started
        self.stage_seconds["store"] += stored - processed
        self.stage_seconds["publish"] += published - stored
        self.stage_seconds["checkpoint"] += time.perf_counter() - published

    def _outgoing(self, results: Sequence[BatchResult]) -> list[Outgoing]:
        settings = self.settings
        messages: list[Outgoing] = []
        for result in results:
            messages += [dead_letter_message(letter, settings.topic_dead_letters) for letter in result.dead_letters]
            messages += [Outgoing(settings.topic_late, (e.grid_id or "").encode(), e.to_json()) for e in result.late]
            for grid_id, record in result.reroutes:
                key = grid_id.encode()
                headers = [("pingan-rerouted-from", record.origin.encode())]
                partition = partition_for_key(key, settings.topic_partitions)
                messages.append(Outgoing(settings.topic_events, key, record.value, partition, headers, record))
            messages += [Outgoing(settings.topic_risk, u.grid_id.encode(), u.to_json())
                         for u in (*result.risk_updates, *result.live_updates)]  # fmt: skip
            messages += [Outgoing(settings.topic_alerts, a.grid_id.encode(), a.to_json()) for a in result.alerts]
        return messages

    async def _publish(self, results: Sequence[BatchResult], now: datetime) -> None:
        """Publish the batch's messages and wait for the broker's acks (see _deliver). A message the broker can
        never take is logged with its origin, and a reroute among them becomes a dead letter."""
        pending = self._outgoing(results)
        while pending:
            refused = await self._deliver(pending, "publish")
            pending = []
            for message, cause in refused:
                log.error("the broker refused a message to %s for good (%r); key %r, %d bytes",
                          message.topic, cause, message.key, len(message.value or b""))  # fmt: skip
                self.refused_messages += 1
                if message.origin is not None:  # a reroute that cannot be re-published: keep the record
                    letter = dead_letter_of(message.origin, now, "unroutable", None, f"re-publishing failed: {cause!r}")
                    await self.storage.write_dead_letters([letter], now)
                    pending.append(dead_letter_message(letter, self.settings.topic_dead_letters))

    async def _deliver(self, messages: Sequence[Outgoing], what: str) -> list[tuple[Outgoing, BaseException]]:
        """Send the messages and wait for the broker's acks. Only the messages that failed are sent again, and only
        while the failure can pass (broker away, leader moving, timeouts; see is_retriable); returns those the broker
        refused for good, with the reason. Raises Abandoned when the worker stops while some still fail."""
        pending = list(messages)
        refused: list[tuple[Outgoing, BaseException]] = []
        collisions: dict[int, int] = defaultdict(int)  # id(message) -> UNKNOWN_SERVER_ERRORs so far
        delay = 0.2
        while pending:
            outcomes = await asyncio.gather(*(self._send(message) for message in pending), return_exceptions=True)
            retry: list[Outgoing] = []
            for message, outcome in zip(pending, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    continue
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                cause = _cause(outcome)
                if is_retriable(cause, collisions[id(message)], local_broker=self.settings.kafka_is_managed):
                    collisions[id(message)] += isinstance(cause, UnknownError)
                    retry.append(message)
                else:
                    refused.append((message, cause))
            if retry:
                if self.app.should_stop:
                    raise Abandoned(f"{what}: {len(retry)} messages failed while stopping")
                log.warning("%s: %d messages failed, retrying them in %.1fs: %r", what, len(retry), delay, retry[0])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            pending = retry
        return refused

    async def send_heartbeats(self) -> None:
        """Write a heartbeat into each partition that has risk waiting for its step to end but no records to end
        it: an idle partition would otherwise hold an escalation back until its next event.

        Its time is the partition's watermark plus the time the partition has been idle: event time is taken to
        run on while nothing comes, at the rate of the clock, from where the feed left it. A feed that is always
        a few minutes behind the clock (a CAD export written late) stays behind it, so its events are not made
        late by a heartbeat from the clock's "now"."""
        now_ms = int(self.clock.now().timestamp() * 1000)
        idle_since = time.monotonic() - self.settings.heartbeat_seconds
        step_ms = self.spec.step_seconds * 1000
        for partition, state in list(self.states.items()):
            last = self.last_record.get(partition)
            if not (state.pending or state.provisional) or last is None or last > idle_since:
                continue
            beat = min(state.watermark_ms + int((time.monotonic() - last) * 1000), max(now_ms, state.watermark_ms))
            if beat < (state.watermark_ms // step_ms + 1) * step_ms:
                continue  # the watermark's step has not ended yet, even at the clock's pace
            await self._send(Outgoing(self.settings.topic_events, None, heartbeat_record(beat), partition))

    async def _send(self, message: Outgoing) -> Any:
        future = await self.app.producer.send(
            message.topic, message.key, message.value, partition=message.partition, timestamp=None,
            headers=message.headers,
        )  # fmt: skip
        return await future

    async def _checkpoint(self, results: Sequence[tuple[int, BatchResult]]) -> None:
        """Write each partition's checkpoint records to the changelog partition of its input partition.

        Order matters (see PartitionState.checkpoint): deletions of what a restore found left over, updates, the
        watermark, then deletions of what this batch superseded or expired. Each stage is acknowledged by the
        broker before the next is sent, so a retried record never overtakes a later one. The watermark goes in a
        produce request of its own: Tansu reports a partition's end as the first offset of its last request + 1,
        so Faust's recovery stops there and would miss the rest of that request. Alone, the watermark of the last
        completed batch is always recovered. A record the broker refuses for good fails the batch (the worker
        exits without committing it, and the batch is replayed).
        """
        stages: list[list[Outgoing]] = [[], [], [], []]
        for partition, result in results:
            records = result.checkpoint
            mark = next(i for i, (key, _) in enumerate(records) if key == "wm")
            leftovers = next((i for i, (_, value) in enumerate(records) if value is not None), mark)
            for stage, part in enumerate((records[:leftovers], records[leftovers:mark], records[mark : mark + 1],
                                          records[mark + 1 :])):  # fmt: skip
                stages[stage] += [self.store.put(partition, key, value) for key, value in part]
        for stage in stages:
            refused = await self._deliver(stage, "checkpoint")
            if refused:
                message, cause = refused[0]
                raise CheckpointRefused(f"the broker refused {len(refused)} changelog records, the first to "
                                        f"{message.topic}[{message.partition}]: {cause!r}")  # fmt: skip


class CheckpointRefused(Exception):
    """A changelog record the broker will not take: the batch cannot be acknowledged (Worker.handle exits)."""


class LogWatch:
    """What the consumer asks the worker at each assignment: how far each partition's checkpoint got (offset and
    the fingerprint of the record there), and what to do when the log is not the one the checkpoint was made
    from (set by create_app once the worker exists)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.done: Callable[[int], tuple[int, int]] = lambda partition: (-1, 0)
        self.anchor: Callable[[int], tuple[int, int]] = lambda partition: (-1, 0)
        self.log_checked: Callable[[Sequence[int]], None] = lambda partitions: None
        self.on_log_lost: Callable[[dict[int, tuple[int, int]]], Awaitable[None]] = lambda lost: asyncio.sleep(0)
        self.prepare: Callable[[Sequence[int]], Awaitable[None]] = lambda partitions: asyncio.sleep(0)
        # Held while the consumer positions partitions: no batch runs meanwhile (Worker.handle holds it too), so a
        # lost log is acted on between batches, never under one.
        self.quiet = asyncio.Lock()
        # Assignments and revocations the consumer saw, and their count when Faust last finished restoring the
        # table (its on_rebalance_complete): partitions are positioned only from a whole table (see _position).
        self.assignments = 0
        self.recovered_at = -1

    def recovered(self) -> None:
        self.recovered_at = self.assignments

    async def fingerprints(self, topic: str, offsets: Mapping[int, int]) -> dict[int, int | None]:
        """The fingerprint of the record at each partition's offset, None where there is none: read with a
        consumer of its own (no group), so Faust's positions are left alone."""
        found: dict[int, int | None] = dict.fromkeys(offsets)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            tps = {partition: TopicPartition(topic, partition) for partition in offsets}
            consumer.assign(list(tps.values()))
            # No look at the end first (a lower bound on Tansu): a seek past the end finds no record there.
            for partition, offset in offsets.items():
                consumer.seek(tps[partition], offset)
                batch = await consumer.getmany(tps[partition], timeout_ms=FINGERPRINT_WAIT_MS, max_records=1)
                for record in batch.get(tps[partition], []):
                    if record.offset == offset:
                        found[partition] = record_fingerprint(record.value or b"")
        finally:
            await consumer.stop()
        return found


FINGERPRINT_WAIT_MS = 3000


def _key(tp: Any) -> tuple[str, int]:
    """A partition as a plain tuple (aiokafka's and Faust's TopicPartition types are both about)."""
    return tp.topic, tp.partition


class BreakCountingThread(faust_kafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, counting the connections to the broker that broke (not those closed at shutdown
    or for idling): a broker may have restarted behind one (see rewinding_consumer)."""

    breaks = 0

    def _create_consumer(self, loop: asyncio.AbstractEventLoop) -> Any:
        consumer = super()._create_consumer(loop)
        client = consumer._client
        closed = client._on_connection_closed  # each connection calls back what this was when it was opened

        def on_closed(conn: Any, reason: Any) -> None:
            if reason not in (CloseReason.SHUTDOWN, CloseReason.IDLE_DROP):
                self.breaks += 1
            closed(conn, reason)

        client._on_connection_closed = on_closed
        return consumer


def rewinding_consumer(topic: str, watch: LogWatch, fetched: FetchedRecords) -> type[faust_kafka.Consumer]:
    """Faust's Kafka consumer, made to hand the records of ``topic`` to the worker itself, and to position its
    partitions from the checkpoint's point of view each time partitions are (re)assigned.

    - The records of ``topic`` never reach Faust's streams (~80 µs a record there): ``_getmany`` turns what it
      fetched into pipeline Records in ``fetched``, waiting for room there first (backpressure: the fetcher waits
      while a batch is waiting; aiokafka heartbeats on the consumer's own thread), and the app's ``feed`` task
      hands them to the worker in batches. The worker tells the consumer what its checkpoint has done
      (``handled``) and Faust's commits commit that (``_new_offset``): never a record before its batch returned,
      never past a hole. Faust's revocation waits for the stream messages it delivered and were not acked; these
      records are none of those, so a revocation drops the partitions' records waiting and lets the batch in hand
      finish first (``on_partitions_revoked``). Records waiting for a partition that is sought are dropped too.

    - A partition whose log is shorter than what the worker already did (its checkpoint or its committed offset
      is beyond the end) lost its log: the local broker keeps topics in memory and came back empty, or a topic
      was deleted and recreated. Faust would keep its old offsets and drop every new record below them (the
      map froze until someone noticed). It is logged as an error with the numbers, the worker is told (it
      recreates the topics and restarts the partition's offsets), and the partition is read from the start.
    - After a rebalance Faust seeks every partition to its committed offset, but aiokafka seeks only to
      offsets > 0, so a never-committed partition keeps its fetch position. Records fetched in the previous
      generation and dropped undelivered by the rebalance were then never fetched again (the SIGKILL test lost
      311 records of a partition the killed worker had not reached). Such partitions are re-read from the
      beginning: the checkpoint's offsets skip what is already done.
    - Nothing of ``topic`` reaches the worker before its partitions are positioned. Faust resumes fetching before
      it seeks, and the consumer reads on from wherever it was meanwhile: after a broker came back empty that is
      the old position, in the middle of the new log, and the worker counted those records before the check
      found the log lost (later records then looked late: windows short of events, in a quarter of the broker
      restart test's runs). Records fetched before a partition's last seek are dropped unseen (the seek reads
      them again from where it decided), so dropping costs nothing and never leaves a hole.
    - After a connection to the broker broke, nothing of ``topic`` reaches the worker before the logs were checked
      again. A broker that restarts empty under a running worker is not noticed by the group for a second or so,
      and meanwhile the consumer fetched on from its old position into the new log: records from the middle of
      the new log moved the watermark on, and the new log's earlier records, read after the loss was found, were
      then late. The check is the one an assignment makes (records fetched before it are dropped, as above).
    """

    class Consumer(faust_kafka.Consumer):
        _positioning: asyncio.Lock | None = None
        # watch.assignments when the last full positioning began: records of ``topic`` pass only once a
        # positioning has finished since the latest assignment.
        _positioned_at = -1
        # Broken connections counted by the consumer's thread when the logs were last checked, and when that was
        # last logged (see _getmany).
        _checked_breaks = 0
        _warned_breaks = 0
        _positioning_failed = float("-inf")  # time.monotonic() of the last positioning that failed
        # Seeks per (topic, partition), counted on the consumer's thread (where fetched records are handed out).
        _seeks: dict[tuple[str, int], int]

        # Per partition of ``topic``, the offset before which the worker has done every record (see handled).
        _handled: dict[Any, int]

        async def on_partitions_revoked(self, revoked: set[Any]) -> None:
            watch.assignments += 1  # nothing of ``topic`` is buffered again before the next positioning
            gone = {tp.partition for tp in revoked if tp.topic == topic}
            dropped = fetched.drop(gone)
            if dropped:
                log.info("dropped %d records of %s waiting for partitions %s, revoked", dropped, topic, sorted(gone))
            # The batch in hand may hold records of these partitions: it finishes (or the process exits) before they
            # go to another worker, which would otherwise process them at the same time.
            await fetched.settled()
            handled = self._handled_offsets()
            for tp in revoked:
                # What the worker did since the last commit is read again by the next owner and skipped by the
                # checkpoint: Faust's own revocation forgets its acks too, before its last commit of them.
                handled.pop(tp, None)
            await super().on_partitions_revoked(revoked)

        async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
            watch.assignments += 1
            mine = {tp.partition for tp in assigned if tp.topic == topic}
            fetched.drop(fetched.partitions() - mine)
            await super().on_partitions_assigned(assigned, generation_id)

        async def wait_empty(self) -> None:
            """Faust's wait for its streams' messages in progress before the last commit of a stop (and of a
            revocation): the worker's batch in hand finishes first, so that commit has what it did."""
            await fetched.settled()
            await super().wait_empty()

        def _handled_offsets(self) -> dict[Any, int]:
            if not hasattr(self, "_handled"):
                self._handled = {}
            return self._handled

        def handled(self, done: Mapping[int, int]) -> None:
            """The worker returned from a batch: per partition of ``topic``, the offset before which its checkpoint
            has done every record. Faust's next commit (every broker_commit_interval, and at a stop) commits it."""
            handled = self._handled_offsets()
            inbound = self.app.monitor.stream_inbound_time
            now = time.monotonic()
            for partition, offset in done.items():
                tp = TP(topic, partition)
                handled[tp] = offset
                self._acked.setdefault(tp, [])  # Faust's commit looks at the partitions in _acked only
                inbound[tp] = now  # what Faust's livelock check (verify_event_path) takes for the stream's progress

        def _new_offset(self, tp: Any) -> int | None:
            """The offset Faust's commit commits (``_should_commit`` then keeps it only if it moves on). Faust's own
            comes from the offsets acked by its streams: none of ``topic``'s, whose records never reach them."""
            if tp.topic == topic:
                return self._handled_offsets().get(tp)
            return super()._new_offset(tp)

        async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> dict[Any, list[Any]]:
            """Faust's fetch, less the records of ``topic``: those go to ``fetched`` (see above), but not those
            fetched before their partition's last seek or while its partitions wait for their positioning."""
            thread = self._thread
            consumer = thread._ensure_consumer()
            seeks = self._seeks_made()

            async def fetch() -> tuple[dict[Any, list[Any]], dict[tuple[str, int], int]]:
                records = await thread._fetch_records(consumer, active_partitions, timeout=timeout,
                                                      max_records=consumer._max_poll_records)  # fmt: skip
                return records, dict(seeks)  # the seeks made when the records were handed out, on that thread

            records, seen = await thread.call_thread(fetch)
            breaks = self._breaks()
            broken = breaks != self._checked_breaks
            # (during a rebalance the positioning that ends it checks the logs; one that failed is tried again here)
            unchecked = broken or self._positioned_at != watch.assignments
            if unchecked and watch.recovered_at == watch.assignments and self._may_retry_positioning():
                if broken and breaks != self._warned_breaks:
                    log.warning("a connection to the broker broke: checking the logs of %s before reading on", topic)
                    self._warned_breaks = breaks
                await self.perform_seek()
            mine = {tp: batch for tp, batch in records.items() if tp.topic == topic and batch}
            if mine:
                if self._positioned():  # (else all of it is dropped: nothing to wait for)
                    # Backpressure: while a batch is waiting, so does the fetch (and Faust's fetcher with it).
                    await fetched.room()
                self._buffer(mine, seen)
            return {tp: batch for tp, batch in records.items() if tp.topic != topic}

        def _buffer(self, records: Mapping[Any, list[Any]], seen: Mapping[tuple[str, int], int]) -> None:
            """Put fetched records of ``topic`` in ``fetched``, less those fetched before their partition's last seek
            (``seen``: the seeks made when they were handed out) or while its partitions wait for their positioning.
            No await from the check to the put: a seek after it drops what was put (seek_in_thread)."""
            seeks = self._seeks_made()
            unpositioned = not self._positioned()
            stale = {}
            for tp, batch in records.items():
                if unpositioned or seen.get(_key(tp), 0) != seeks.get(_key(tp), 0):
                    stale[tp.partition] = len(batch)
                else:
                    fetched.put(tp.partition, to_records(topic, tp.partition, batch))
            if stale:
                log.info("dropped records of %s fetched before their positioning: %s", topic, stale)

        def _positioned(self) -> bool:
            """Whether a positioning of the latest assignment has finished and none is under way."""
            positioning = self._positioning is not None and self._positioning.locked()
            return not positioning and self._positioned_at == watch.assignments

        def _seeks_made(self) -> dict[tuple[str, int], int]:
            if not hasattr(self, "_seeks"):
                self._seeks = {}
            return self._seeks

        def _new_consumer_thread(self) -> faust_kafka.AIOKafkaConsumerThread:
            return BreakCountingThread(self, loop=self.loop, beacon=self.beacon)

        async def perform_seek(self) -> None:
            # Faust seeks from the recovery and from getmany, which can overlap: one positioning at a time, so a
            # lost log is acted on once and the second sees the state the first left.
            if self._positioning is None:
                self._positioning = asyncio.Lock()
            async with self._positioning, watch.quiet:
                began, breaks = watch.assignments, self._breaks()
                try:
                    positioned = await self._position()
                except (KafkaError, OSError, ServiceError) as exc:
                    # The broker is not back yet (or has no topic yet). Raised into Faust's recovery, this crashed the
                    # worker when the broker went away during a rebalance. Nothing of ``topic`` is read until a
                    # positioning passes: the next fetches try again (see _getmany).
                    log.warning("positioning the partitions of %s failed (%r); trying again", topic, exc)
                    self._positioning_failed = time.monotonic()
                    return
                if positioned:
                    self._positioned_at, self._checked_breaks = began, breaks

        def _may_retry_positioning(self) -> bool:
            """At most one try a second after a failed positioning (a broker that refuses connections fails at once)."""
            return time.monotonic() - self._positioning_failed >= POSITIONING_RETRY_S

        def _breaks(self) -> int:
            thread = self._thread
            return thread.breaks if isinstance(thread, BreakCountingThread) else 0

        async def _position(self) -> bool:
            """Seek the partitions of ``topic`` from the checkpoint's point of view; False when it must wait."""
            await super().perform_seek()
            if watch.recovered_at != watch.assignments:
                # Faust also seeks while it is still restoring the table (from getmany, when it finds the flow
                # stopped by a rebalance). A state restored from a table half read back was kept and used: a
                # partition taken over then had buckets of an older batch under the watermark of a newer one (events
                # of the batches between were missing from its windows: the 2-worker mismatch). The positioning is
                # left to the seek Faust makes once the table is whole (Recovery.on_recovery_completed).
                return False
            mine = sorted(tp for tp in self.assignment() if tp.topic == topic)
            if not mine:
                return True
            await watch.prepare([tp.partition for tp in mine])
            ends = await self.highwaters(*mine)
            lost: dict[int, tuple[int, int]] = {}
            checked = {}
            for tp in mine:
                done_offset, fingerprint = watch.done(tp.partition)
                done = max(done_offset + 1, self._committed_offset.get(tp) or 0)
                end = ends.get(tp)
                anchor, anchored = watch.anchor(tp.partition)
                if anchor >= 0 and anchored:
                    # A record the state was built from decides: Tansu reports a partition's end as the first offset
                    # of its last produce request + 1, so an end before ``done`` proves nothing on its own (it made
                    # a whole log look lost when the last request held several records).
                    checked[tp.partition] = (anchor, anchored)
                elif end is not None and done > end:
                    lost[tp.partition] = (done, end)
            if checked:  # is it the same log? The record the checkpoint ended on must be there
                found = await watch.fingerprints(topic, {p: offset for p, (offset, _) in checked.items()})
                log.info("partitions of %s checked against their checkpoint (offset, fingerprint): %s; found there: %s",
                         topic, checked, found)  # fmt: skip
                for partition, (offset, fingerprint) in checked.items():
                    if found[partition] != fingerprint:
                        lost[partition] = (offset + 1, ends.get(TopicPartition(topic, partition), -1))
            if lost:
                for partition, (done, end) in sorted(lost.items()):
                    log.error("partition %d of %s: the log was lost: %d records were done, but the log now ends at "
                              "%d or holds other records; reading it again from the beginning", partition, topic,
                              done, end)  # fmt: skip
                await watch.on_log_lost(lost)
                for tp in mine:
                    if tp.partition in lost:
                        self._forget_offsets(tp)
            watch.log_checked([p for p in checked if p not in lost])
            for tp in mine:
                done_offset, _ = watch.done(tp.partition)
                committed = self._committed_offset.get(tp) or 0
                if tp.partition not in lost and done_offset >= 0 and committed > done_offset + 1:
                    # committed past records the checkpoint never saw (offsets Faust counted as skipped)
                    log.error("partition %d of %s: committed offset %d is past the checkpoint (%d done); reading "
                              "from %d", tp.partition, topic, committed, done_offset, done_offset + 1)  # fmt: skip
                    self._committed_offset[tp] = done_offset + 1
            never_committed = sorted(tp for tp in mine if not self._committed_offset.get(tp))
            if never_committed:
                log.info("partitions %s of %s have no committed offset: reading them from the beginning",
                         [tp.partition for tp in never_committed], topic)  # fmt: skip
            # Every partition is sought last, also those already at their committed offset: what was fetched before
            # is dropped (_getmany), and is read again from here.
            for tp in mine:
                await self.seek_in_thread(tp, self._committed_offset.get(tp) or 0)
            return True

        async def seek_to_committed(self) -> Mapping[Any, int | None]:
            """Seek each assigned partition to its committed offset, skipping a partition revoked meanwhile.

            aiokafka's seek_to_committed asks for one partition's committed offset at a time (an await each) and
            then seeks it. Faust's getmany calls it when it finds the flow stopped, which is in the middle of a
            rebalance: a partition revoked during one of those awaits made the seek raise IllegalStateError "No
            current assignment for partition" (seen on rejoins). A revoked partition needs no seek: the next
            assignment's recovery seeks every partition it assigns."""
            return await self._thread.call_thread(self._seek_assigned_to_committed)

        async def _seek_assigned_to_committed(self) -> dict[Any, int | None]:
            consumer = self._thread._ensure_consumer()
            committed: dict[Any, int | None] = {}
            for tp in sorted(consumer.assignment()):
                offset = await consumer.committed(tp)
                if tp not in consumer.assignment():
                    continue
                committed[tp] = offset
                if offset and offset > 0:
                    consumer.seek(tp, offset)
            return committed

        async def seek_in_thread(self, tp: Any, offset: int) -> None:
            """Faust's seek calls aiokafka from the caller's thread while the consumer's own thread fetches;
            aiokafka is not thread-safe (a seek during a fetch crashed the fetcher with a KeyError). This runs it
            on the consumer's thread, then sets Faust's read offset as its own seek does."""
            thread = self._thread
            seeks = self._seeks_made()
            key = _key(tp)

            def seek() -> None:
                thread.seek(faust_kafka.ensure_aiokafka_TP(tp), offset)
                seeks[key] = seeks.get(key, 0) + 1

            await thread.call_thread(seek)
            self._read_offset[TP(tp.topic, tp.partition)] = offset if offset else None
            if tp.topic == topic:
                # read again from here: what was fetched before is never handed to the worker
                dropped = fetched.drop([tp.partition])
                if dropped:
                    log.info("dropped %d records of %s[%d] fetched before its seek to %d", dropped, topic,
                             tp.partition, offset)  # fmt: skip

        async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
            """Faust counts offsets it skipped between two delivered records as acknowledged, so a commit moves
            past records nobody processed (the 2-worker test lost events that way at rebalances, when ``topic``'s
            records went through Faust's streams). No topic's hole is acknowledged here; those of ``topic`` never
            reach Faust's bookkeeping at all (see handled), and the worker reads a partition again from a hole."""

        def _forget_offsets(self, tp: Any) -> None:
            """Faust's own bookkeeping of a partition whose log began again: nothing committed or acked in it."""
            self._committed_offset[tp] = None
            self._acked[tp].clear()
            self._acked_index[tp].clear()
            self._gap.pop(tp, None)
            self._handled_offsets().pop(tp, None)  # an offset of the old log, past the new one's records

    return Consumer


POSITIONING_RETRY_S = 1.0

# A batch of the worker's holds up to this many rounds of batch_max_bytes of values (see Worker._handle), and as many
# may wait behind it: with event batch records, a batch of batch_max_events records would be hundreds of MB.
TAKE_ROUNDS = 4


async def feed(app: faust.App, worker: Worker, fetched: FetchedRecords) -> None:
    """Hand the fetched records of the events topic to the worker in batches, and what each did to the consumer
    to commit, until the app stops. A failure here would stop consumption without a word: the process exits
    instead (as Worker.handle_taken does), without committing, and the restarted worker reads on from the commit."""
    try:
        while not app.should_stop:
            await fetched.wait_ready()
            if app.should_stop:
                break
            try:
                done = await worker.handle_taken(fetched.take)
                consumer = app.consumer
                handled = getattr(consumer, "handled", None)
                if handled is None:
                    raise TypeError(f"the app's consumer {consumer!r} is not rewinding_consumer's")
                handled(done)
            finally:
                fetched.release()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.critical("feeding the worker failed; exiting without committing what it did not finish", exc_info=True)
        logging.shutdown()
        os._exit(70)


def faust_app(settings: Settings, app_id: str, *, stream_buffer: int) -> faust.App:
    """A Faust app on the settings' broker with the worker's options (the benches' Faust agents use it too, so
    they measure Faust as the worker runs it)."""
    return faust.App(
        app_id,
        broker=[f"kafka://{hostport}" for hostport in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "faust" / app_id),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # A SIGKILLed worker's partitions wait out this before the group notices (10 s measured ~20 s from SIGKILL
        # to ready); heartbeats run on the consumer's own thread, so a busy batch does not miss them.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        stream_buffer_maxsize=max(stream_buffer, 4096),
        web_enabled=False,
        # Faust waits 3 s after each rebalance by default; nothing here needs that pause.
        stream_recovery_delay=0.0,
        # Faust's check that a changelog's highwater is not below the offset it wrote is for RocksDB files left
        # from another log; with memory stores it only misfires on Tansu, whose highwater is a lower bound (it
        # crashed a worker that kept its partitions across a rebalance). A lost changelog is found by LogWatch.
        recovery_consistency_check=False,
        producer_acks=-1,
        # Faust's default 16 KB batches made every batch's risk and dead-letter messages a few hundred produce
        # round trips (30 s for 15,000 messages); 1 MiB batches and a 5 ms linger take a few.
        producer_max_batch_size=1024 * 1024,
        producer_linger=0.005,
    )


def create_app(
    settings: Settings,
    grids: GridRegistry,
    index: IndexConfig,
    *,
    clock: Clock | None = None,
    baseline: BaselineModel | None = None,
    rules: FeedRules | None = None,
) -> tuple[faust.App, Worker]:
    """The Faust app and its worker; nothing connects until the app starts."""
    app = faust_app(settings, settings.worker_id, stream_buffer=settings.batch_max_events * 2)
    watch = LogWatch(settings.kafka_bootstrap)
    fetched = FetchedRecords(settings.batch_max_events, settings.batch_within_seconds,
                             settings.batch_max_bytes * TAKE_ROUNDS)  # fmt: skip
    app.transport.Consumer = rewinding_consumer(settings.topic_events, watch, fetched)
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
        app, settings, grids, index, store=StateStore(table), clock=clock or SystemClock(), baseline=baseline,
        rules=rules,
    )  # fmt: skip
    watch.done = worker.checkpointed
    watch.anchor = worker.anchor
    watch.log_checked = worker.log_checked
    watch.on_log_lost = worker.on_log_lost
    watch.prepare = worker.prepare
    watch.quiet = worker.quiet

    # This agent never receives a record (the consumer's _getmany hands them all to ``fetched``): it is what makes
    # Faust subscribe to the topic, as an agent on it always did, so the group, the assignor (which co-partitions the
    # table's changelog with the topic) and the table's recovery see the same app as before. Adding the topic to
    # app.topics by hand would do too, but leans on more of Faust's internals for nothing.
    @app.agent(events_topic, name="risk-index")
    async def subscribe_events(stream: faust.StreamT) -> None:
        async for event in stream:
            log.error("%s[%d]@%d reached a Faust stream; it is left to the worker's own feed", event.message.topic,
                      event.message.partition, event.message.offset)  # fmt: skip

    @app.task
    async def feeding() -> None:
        await feed(app, worker, fetched)

    @app.on_rebalance_complete.connect
    async def on_recovered(app: faust.App, **_: Any) -> None:
        watch.recovered()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        worker.forget({tp.partition for tp in revoked if tp.topic == settings.topic_events})

    if settings.heartbeat_seconds > 0:

        @app.timer(interval=settings.heartbeat_seconds)
        async def heartbeat() -> None:
            await worker.send_heartbeats()

    @app.timer(interval=settings.progress_log_seconds)
    async def report_progress() -> None:
        elapsed = time.monotonic() - worker.started
        stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in worker.stage_seconds.items())
        log.info("processed %d records in %d batches in %.0fs (%s)", worker.processed, worker.batches, elapsed, stages)
        trouble = {
            "rows ClickHouse refused": worker.storage.rejected_rows,
            "messages the broker refused": worker.refused_messages,
            "partitions read again from a hole": worker.rereads,
            "partition logs found lost": worker.log_losses,
        }
        if any(trouble.values()):
            log.warning("since start: %s", ", ".join(f"{name} {count}" for name, count in trouble.items() if count))

    return app, worker
