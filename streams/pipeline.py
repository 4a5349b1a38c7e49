"""One batch of raw records in, everything the worker must write out: pure, deterministic, no I/O.

The Faust agent (streams/app.py) only moves bytes: it hands a batch to :func:`process_batch` and writes
what comes back (ClickHouse rows, topic messages, checkpoint records) before the batch's offsets are
acknowledged. Results depend on the records only (event time and the records' own timestamps), never on
the wall clock, so replaying a topic reproduces them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import orjson

from pingan.dead_letter import DeadLetter, batch_origin
from pingan.errors import InvalidEvent
from pingan.feeds import FeedRules
from pingan.grids import GridLookup, resolve_grid
from pingan.index.alerts import Alert, alert_for
from pingan.index.baseline import BaselineModel
from pingan.index.levels import Level
from pingan.index.records import RiskUpdate, WindowRow
from pingan.index.scoring import IndexConfig
from pingan.partitioning import partition_for_key
from pingan.schemas.batch import batch_documents, is_batch
from pingan.schemas.envelope import EARLIEST_TIME, Event, decode_object
from pingan.schemas.payloads import SOURCE_PAYLOADS
from pingan.streams.windows import GridRisk, Judgement, Outcome, PartitionState, record_fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None
    # For one envelope of an event batch record (schemas/batch.py): its index there, and ``value`` is it alone.
    item: int | None = None

    @property
    def origin(self) -> str:
        """Where it came from, as dead letters name it (pingan/dead_letter.py)."""
        if self.item is None:
            return f"{self.topic}/{self.partition}/{self.offset}"
        return batch_origin(self.topic, self.partition, self.offset, self.item)


@dataclass(frozen=True)
class PipelineConfig:
    index: IndexConfig
    partitions: int
    # What is normal per grid, source and hour of the week; None scores counts alone (volume index only).
    baseline: BaselineModel | None = None
    # The check every way in makes (envelope, payload models, size and time limits, the feeds' type tables):
    # by default the four built-in feeds with the default limits and no type tables.
    rules: FeedRules = field(default_factory=lambda: FeedRules(MappingProxyType(dict(SOURCE_PAYLOADS)), {}))
    # partition_of's answers (a murmur2 hash per event otherwise); one entry per known grid at most.
    _partitions: dict[str, int] = field(default_factory=dict, init=False, compare=False, repr=False)

    def partition_of(self, grid_id: str) -> int:
        """The input partition a grid's events belong to (the producers key them by grid)."""
        partition = self._partitions.get(grid_id)
        if partition is None:
            partition = self._partitions[grid_id] = partition_for_key(grid_id.encode(), self.partitions)
        return partition


@dataclass(frozen=True, slots=True)
class LiveValue:
    """A grid's live value as judged, not yet built into a RiskUpdate."""

    judgement: Judgement
    version: int
    previous: GridRisk | None
    provisional: bool = False


@dataclass
class BatchResult:
    stored: list[tuple[Event, Record, bool]] = field(default_factory=list)  # (event, record, late)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)
    reroutes: list[tuple[str, Record]] = field(default_factory=list)  # (grid id, record)
    window_rows: list[WindowRow] = field(default_factory=list)
    # Risk decided at the steps of event time: a function of the events alone (risk_updates, alerts).
    risk_updates: list[RiskUpdate] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    # The map's view between steps: provisional risk at the end of the batch, and the step's verdict on grids
    # that had one. Written to risk_latest and the risk topic only, never to the risk_updates log.
    live_updates: list[RiskUpdate] = field(default_factory=list)
    # While the batch is processed: each grid's newest live value, built into live_updates at the end only if
    # no logged update is as new (most judgements of a busy grid are superseded within the batch).
    newest_live: dict[str, LiveValue] = field(default_factory=dict, repr=False)
    checkpoint: list[tuple[str, bytes | None]] = field(default_factory=list)
    # The first range of offsets (first, last) that never arrived before a record that did: the batch stops
    # there, and the worker reads the partition again from ``first``.
    gaps: list[tuple[int, int]] = field(default_factory=list)
    applied: int = 0
    replayed: int = 0
    duplicates: int = 0
    skipped: int = 0
    # Records whose broker timestamp was outside the storable window: their receive time is the worker's clock.
    clock_fallbacks: int = 0
    heartbeats: int = 0
    batches: int = 0  # event batch records among the records


# Window state orders what it applied by position: the record's offset, then the envelope's index in an event
# batch record (0 for a record of one event), so every envelope of a batch counts once and replays skip it
# (more slots than pingan.schemas.batch.MAX_BATCH_EVENTS).
ITEM_SLOTS = 8192

HEARTBEAT_PREFIX = b'{"heartbeat_ms":'


def heartbeat_record(at_ms: int) -> bytes:
    """A record that says event time on its partition has reached ``at_ms``, though no event came: the
    worker writes one into an idle partition so that the step with pending risk ends. It is part of the log,
    so a replay ends the same steps at the same offsets."""
    return HEARTBEAT_PREFIX + str(at_ms).encode() + b"}"


def heartbeat_time(value: bytes) -> int | None:
    """The time of a heartbeat record, None for any other record (or a malformed heartbeat)."""
    if not value.startswith(HEARTBEAT_PREFIX) or not value.endswith(b"}"):
        return None
    digits = value[len(HEARTBEAT_PREFIX) : -1]
    return int(digits) if digits.isdigit() and len(digits) <= 16 else None


def _storable_ms(at_ms: int, now: datetime, max_future: timedelta) -> bool:
    """In the window every stored time must be in (see pingan.schemas.envelope.check_time)."""
    return EARLIEST_TIME.timestamp() * 1000 <= at_ms <= (now + max_future).timestamp() * 1000


def received_at(record: Record, now: datetime, max_future: timedelta) -> datetime | None:
    """The record's broker timestamp if it is one a stored time may have, else None."""
    if record.timestamp_ms is None or not _storable_ms(record.timestamp_ms, now, max_future):
        return None
    return datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)


def process_batch(
    records: Sequence[Record],
    state: PartitionState,
    grids: GridLookup,
    config: PipelineConfig,
    *,
    now: datetime,
) -> BatchResult:
    """Validate, route, window and score one batch of records from ONE partition, in offset order.

    Risk updates and alerts come from the steps of event time the watermark passes (scored before the event
    that passes them is applied), so they are the same however the stream is cut into batches.
    """
    result = BatchResult()
    state.score_with(config.index, config.baseline)
    previous = state.done_offset  # -1: nothing done yet on this partition, so no gap can be told
    last_done: Record | None = None
    for record in records:
        if record.offset <= state.done_offset:
            result.skipped += 1  # written before a restart; its effects are in the restored state
            continue
        if previous >= 0 and record.offset > previous + 1:
            # Offsets that never arrived: the events topic has no transactions or compaction, so the consumer
            # skipped them (Faust does, around rebalances). Nothing after the hole is processed; the worker reads
            # the partition again from it, and done_offset never passes a record that was not processed.
            result.gaps.append((previous + 1, record.offset - 1))
            break
        previous = record.offset
        last_done = record
        arrived = received_at(record, now, config.rules.max_future)
        if arrived is None:
            arrived = now
            result.clock_fallbacks += record.timestamp_ms is not None
        beat = heartbeat_time(record.value)
        if beat is not None:
            if not _storable_ms(beat, arrived, config.rules.max_future):
                reason = f"heartbeat at {beat} ms: not in 2000-01-01..{arrived.isoformat()} + {config.rules.max_future}"
                letter = dead_letter_of(record, arrived, "out_of_range", "heartbeat_ms", reason)
                result.dead_letters.append(letter)
                continue
            _end_steps_before(state, config, beat, result)
            state.watermark_ms = max(state.watermark_ms, beat)
            result.heartbeats += 1
            continue
        if is_batch(record.value):
            try:
                documents = batch_documents(record.value)
            except InvalidEvent as exc:
                result.dead_letters.append(dead_letter_of(record, arrived, exc.kind, exc.field, exc.reason))
                continue
            result.batches += 1
            envelopes = [orjson.dumps(document) for document in documents]  # each alone, as a dead letter keeps it
            checked = _checked_all(record, envelopes, documents, arrived, config)
            topic, partition, offset, key = record.topic, record.partition, record.offset, record.key
            for index, (envelope, event) in enumerate(zip(envelopes, checked, strict=True)):
                item = Record(topic, partition, offset, key, envelope, record.timestamp_ms, index)  # replace() is slow
                _take(item, event, offset * ITEM_SLOTS + index, arrived, state, grids, config, result)
        else:
            event = _checked(record.value, arrived, config)
            _take(record, event, record.offset * ITEM_SLOTS, arrived, state, grids, config, result)

    if last_done is not None:
        state.done_offset = last_done.offset
        state.done_fingerprint = record_fingerprint(last_done.value)
    _window_rows(state, config, state.watermark_ms, result)
    _provisional(state, config, result)
    newest_logged = {u.grid_id: u.version for u in result.risk_updates}  # in step order: the last is the newest
    result.live_updates = [
        _update(config, grid_id, live.judgement, live.version, live.previous, provisional=live.provisional)
        for grid_id, live in sorted(result.newest_live.items())
        if live.version > newest_logged.get(grid_id, -1)
    ]
    result.newest_live.clear()
    result.checkpoint = list(state.checkpoint())
    return result


def _checked(raw: bytes, arrived: datetime, config: PipelineConfig) -> Event | Exception:
    """The envelope's event, or why it is refused (InvalidEvent), or the error of a bug (it costs this one only)."""
    try:
        return config.rules.validate(raw, now=arrived)
    except Exception as exc:
        return exc


def _checked_all(
    record: Record, envelopes: list[bytes], documents: list[Any], arrived: datetime, config: PipelineConfig
) -> Sequence[Event | Exception]:
    """The events of a batch record's envelopes, checked in one pass (FeedRules.validate_all); should that fail
    (a bug), each envelope is checked alone, so the bug costs the envelopes it is in and not the batch."""
    try:
        return config.rules.validate_all(envelopes, documents, now=arrived)
    except Exception:
        log.exception("checking the envelopes of %s in one pass failed; checking them one by one", record.origin)
    return [_checked(envelope, arrived, config) for envelope in envelopes]


def _take(
    record: Record, checked: Event | Exception, position: int, arrived: datetime, state: PartitionState,
    grids: GridLookup, config: PipelineConfig, result: BatchResult,
) -> None:  # fmt: skip
    """Route one checked envelope and apply it to the windows (after scoring the steps it ends)."""
    try:
        if isinstance(checked, Exception):
            raise checked
        event = checked
        grid_id = resolve_grid(event, grids)
    except InvalidEvent as exc:
        result.dead_letters.append(dead_letter_of(record, arrived, exc.kind, exc.field, exc.reason))
        return
    except Exception as exc:  # a bug must cost one record, not the worker: keep it with the reason
        log.exception("unexpected error on %s", record.origin, exc_info=exc)
        result.dead_letters.append(dead_letter_of(record, arrived, "internal_error", None, repr(exc)))
        return
    if config.partition_of(grid_id) != record.partition:
        # All of a grid's events must pass through one partition for its window state to be exact.
        result.reroutes.append((grid_id, record))
        return
    event = event if event.grid_id == grid_id else event.with_grid(grid_id)
    event_ms = event.event_time_ms
    _end_steps_before(state, config, event_ms, result)
    key = (event.source, event.type, event.severity)
    outcome, _ = state.apply(grid_id, event_ms, key, position, event.event_id)
    late = outcome == Outcome.LATE
    if late:
        result.late.append(event)
    elif outcome == Outcome.APPLIED:
        result.applied += 1
    elif outcome == Outcome.REPLAYED:
        result.replayed += 1
    else:
        result.duplicates += 1
    result.stored.append((event, record, late))


def dead_letter_of(record: Record, received_at: datetime, kind: str, field_: str | None, reason: str) -> DeadLetter:
    """A record (or an envelope of a batch record) the worker read from Kafka and could not use."""
    return DeadLetter.of(
        InvalidEvent(kind, reason, field_), record.value, origin=record.origin, received_at=received_at,
        source="worker", feed=_claimed_source(record.value),
    )  # fmt: skip


def _claimed_source(raw: bytes) -> str:
    """The feed a bad record says it is from, when it can be read (for `pingan dead-letters list --feed`)."""
    try:
        source = decode_object(raw).get("source")
    except InvalidEvent:
        return ""
    return source if isinstance(source, str) and len(source) <= 64 else ""


def _update(
    config: PipelineConfig, grid_id: str, judgement: Judgement, version: int, previous: GridRisk | None, *,
    provisional: bool = False,
) -> RiskUpdate:  # fmt: skip
    baseline = config.baseline
    return RiskUpdate.build(
        grid_id, datetime.fromtimestamp(version / 1000, UTC), judgement.live, judgement.shown,
        previous.level.value if previous else None, config.index.version, version,
        baseline.version if baseline is not None else "", hold=judgement.hold, provisional=provisional,
    )  # fmt: skip


def _end_steps_before(state: PartitionState, config: PipelineConfig, at_ms: int, result: BatchResult) -> None:
    """Score every step that event time reaching ``at_ms`` ends (nothing before the first event)."""
    if at_ms <= state.watermark_ms or state.watermark_ms <= 0:
        return
    for step_ms in state.spec.scoring_times(state.watermark_ms, at_ms):
        if state.empty:
            break
        _score_step(state, config, step_ms, result)


def _score_step(state: PartitionState, config: PipelineConfig, at_ms: int, result: BatchResult) -> None:
    """One step of event time ends at ``at_ms``: window rows, risk changes and alerts, expiry.

    Only grids off plain green are remembered: a grid that comes back to green with a zero score gets a last
    update and is forgotten, so the state holds exactly the grids the map shows in colour.
    """
    index, baseline = config.index, config.baseline
    if state.bucket_at(at_ms) != state.rows_bucket:
        # Rows when the live hour moves on (and at the end of the batch), not at every step: history is per
        # bucket, and a bucket's rows cannot lose data before then (it expires an hour and more later).
        _window_rows(state, config, at_ms, result)
    version = at_ms + 1  # the end of the step: as_of and the key of what it decides
    for grid_id in sorted(state.grids_to_score(at_ms)):
        judgement = state.judge(grid_id, index, baseline, at_ms=at_ms)
        live, shown = judgement.live, judgement.shown
        previous = state.risks.get(grid_id)
        plain = live.score == 0 and shown is Level.GREEN
        risk = GridRisk(live.score, shown, version, live.dominant_source, live.window_events, live.score)
        if (previous is None and plain) or (previous is not None and previous.same_values(risk)):
            if grid_id in state.provisional:  # the map showed a provisional value: put the decided one back
                result.newest_live[grid_id] = LiveValue(judgement, version, previous)
            continue
        if previous is not None and not plain and not risk.worth_logging_after(previous):
            # A small move: the map shows it (decided, not provisional); the log keeps the last logged value.
            result.newest_live[grid_id] = LiveValue(judgement, version, previous)
            state.set_risk(grid_id, risk.logged_as(previous.logged_score))
            continue
        update = _update(config, grid_id, judgement, version, previous)
        result.risk_updates.append(update)
        alert = alert_for(
            grid_id, update.previous_level, update.level, update.score, update.as_of, version, update.explanation,
            index.version,
        )  # fmt: skip
        if alert is not None:
            result.alerts.append(alert)
        state.set_risk(grid_id, None if plain else risk)
    state.scored_ms = at_ms
    state.pending.clear()
    state.provisional.clear()
    state.expire(at_ms)


def _provisional(state: PartitionState, config: PipelineConfig, result: BatchResult) -> None:
    """The risk of grids with events since the last step, as the map should show it until the step ends."""
    at_ms = state.watermark_ms
    for grid_id in sorted(state.pending):
        judgement = state.judge(grid_id, config.index, config.baseline, at_ms=at_ms)
        live, shown = judgement.live, judgement.shown
        previous = state.risks.get(grid_id)
        risk = GridRisk(live.score, shown, at_ms, live.dominant_source, live.window_events, live.score)
        if previous is None and live.score == 0 and shown is Level.GREEN:
            continue
        if previous is not None and previous.same_values(risk) and grid_id not in state.provisional:
            continue
        result.newest_live[grid_id] = LiveValue(judgement, at_ms, previous, provisional=True)
        state.provisional.add(grid_id)


def _window_rows(state: PartitionState, config: PipelineConfig, at_ms: int, result: BatchResult) -> None:
    """Rows of the windows that changed since the last rows: those whose hour holds a bucket with new events,
    and, when the live hour moved on, the windows ending at the buckets it entered (with or without events of
    their own: their hour may still carry a score)."""
    spec = state.spec
    size, hop = spec.bucket_seconds, spec.hop_seconds
    current = state.bucket_at(at_ms)
    ends = {
        (grid_id, end)
        for grid_id, start in state.unrowed
        for end in range(start, min(start + hop, current + size), size)
        if grid_id in state.buckets
    }
    if state.rows_bucket >= 0 and current > state.rows_bucket:
        for grid_id, grid_buckets in state.buckets.items():
            first = max(state.rows_bucket + size, min(grid_buckets))
            last = min(current, max(grid_buckets) + hop - size)
            ends.update((grid_id, end) for end in range(first, last + 1, size))
    for grid_id, end in sorted(ends):
        assessment = state.assess_hop(grid_id, end, config.index, config.baseline)
        bucket = state.buckets[grid_id].get(end)
        counts = bucket.counts if bucket is not None else {}
        result.window_rows.append(WindowRow.build(grid_id, end, size, counts, assessment, config.index, at_ms))
    state.unrowed.clear()
    state.rows_bucket = current
