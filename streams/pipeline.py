"""One batch of raw records in, everything the worker must write out: pure, deterministic, no I/O.

The Faust agent (streams/app.py) only moves bytes: it hands a batch to :func:`process_batch` and writes
what comes back (ClickHouse rows, topic messages, checkpoint records) before the batch's offsets are
acknowledged. Results depend on the records only (event time and the records' own timestamps), never on
the wall clock, so replaying a topic reproduces them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel

from pingan.errors import InvalidEvent
from pingan.partitioning import partition_for_key
from pingan.store.alerts import Alert, alert_for
from pingan.store.dead_letters import DeadLetter
from pingan.store.risk import RiskUpdate
from pingan.store.windows import WindowRow
from schemas.envelope import Event, parse_event
from schemas.payloads import SOURCE_PAYLOADS
from streams.baseline import BaselineModel
from streams.risk_index import IndexConfig, Level
from streams.windows import GridRisk, Outcome, PartitionState

log = logging.getLogger(__name__)


class GridLookup(Protocol):
    def get(self, grid_id: str) -> object | None: ...

    def locate(self, lon: float, lat: float) -> object | None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class PipelineConfig:
    index: IndexConfig
    partitions: int
    max_event_bytes: int = 64 * 1024
    max_future: timedelta = timedelta(minutes=5)
    payload_models: Mapping[str, type[BaseModel]] = field(default_factory=lambda: dict(SOURCE_PAYLOADS))
    # What is normal per grid, source and hour of the week; None scores counts alone (volume index only).
    baseline: BaselineModel | None = None


@dataclass
class BatchResult:
    stored: list[tuple[Event, Record, bool]] = field(default_factory=list)  # (event, record, late)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)
    reroutes: list[tuple[str, Record]] = field(default_factory=list)  # (grid id, record)
    window_rows: list[WindowRow] = field(default_factory=list)
    risk_updates: list[RiskUpdate] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    checkpoint: list[tuple[str, bytes | None]] = field(default_factory=list)
    # Offset ranges (first, last) of the partition that never arrived between records that did. The events
    # topic has no transactions or compaction, so a gap means the consumer skipped records: reported loudly.
    gaps: list[tuple[int, int]] = field(default_factory=list)
    applied: int = 0
    replayed: int = 0
    duplicates: int = 0
    skipped: int = 0


def _received_at(record: Record, fallback: datetime) -> datetime:
    if record.timestamp_ms is None or record.timestamp_ms < 0:
        return fallback
    return datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)


def resolve_grid(event: Event, grids: GridLookup) -> str:
    """The grid an event belongs to: its own grid_id if known, else the grid containing its location."""
    if event.grid_id is not None:
        if grids.get(event.grid_id) is None:
            raise InvalidEvent("unknown_grid", f"grid {event.grid_id!r} is not in the grid registry", "grid_id")
        return event.grid_id
    assert event.lon is not None and event.lat is not None  # parse_event guarantees a place
    grid = grids.locate(event.lon, event.lat)
    if grid is None:
        raise InvalidEvent("outside_grids", f"({event.lon}, {event.lat}) is outside every grid", "location")
    return grid.grid_id  # type: ignore[attr-defined]


def process_batch(
    records: Sequence[Record],
    state: PartitionState,
    grids: GridLookup,
    config: PipelineConfig,
    *,
    now: datetime,
) -> BatchResult:
    """Validate, route, window and score one batch of records from ONE partition, in offset order."""
    result = BatchResult()
    touched: set[tuple[str, int]] = set()
    previous = state.done_offset  # -1: nothing done yet on this partition, so no gap can be told
    for record in records:
        if record.offset <= state.done_offset:
            result.skipped += 1  # written before a restart; its effects are in the restored state
            continue
        if previous >= 0 and record.offset > previous + 1:
            result.gaps.append((previous + 1, record.offset - 1))
        previous = record.offset
        received_at = _received_at(record, now)
        try:
            event = parse_event(
                record.value,
                now=received_at,
                max_bytes=config.max_event_bytes,
                max_future=config.max_future,
                payload_models=config.payload_models,
            )
            grid_id = resolve_grid(event, grids)
        except InvalidEvent as exc:
            result.dead_letters.append(_dead_letter(record, received_at, exc.kind, exc.field, exc.reason))
            continue
        except Exception as exc:  # a bug must cost one record, not the worker: keep it with the reason
            log.exception("unexpected error on %s[%d]@%d", record.topic, record.partition, record.offset)
            result.dead_letters.append(_dead_letter(record, received_at, "internal_error", None, repr(exc)))
            continue
        if partition_for_key(grid_id.encode(), config.partitions) != record.partition:
            # All of a grid's events must pass through one partition for its window state to be exact.
            result.reroutes.append((grid_id, record))
            continue
        event = event if event.grid_id == grid_id else event.with_grid(grid_id)
        key = (event.source, event.type, event.severity)
        outcome, start = state.apply(grid_id, event.event_time_ms, key, record.offset, event.event_id)
        late = outcome == Outcome.LATE
        if late:
            result.late.append(event)
        elif outcome == Outcome.APPLIED:
            result.applied += 1
            touched.add((grid_id, start))
        elif outcome == Outcome.REPLAYED:
            result.replayed += 1
        else:
            result.duplicates += 1
        result.stored.append((event, record, late))

    if records:
        state.done_offset = max(state.done_offset, records[-1].offset)
    _score(state, config.index, config.baseline, touched, result)
    return result


def _dead_letter(record: Record, received_at: datetime, kind: str, field_: str | None, reason: str) -> DeadLetter:
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        received_at=received_at,
        kind=kind,
        field=field_ or "",
        reason=reason,
        raw=record.value,
    )


def _score(
    state: PartitionState,
    index: IndexConfig,
    baseline: BaselineModel | None,
    touched: set[tuple[str, int]],
    result: BatchResult,
) -> None:
    """Window rows for touched buckets, risk updates for grids whose risk changed, expiry, checkpoint."""
    state.forget_assessments()  # memoised per scoring pass: the config or baseline may differ from the last
    version = state.watermark_ms
    as_of = datetime.fromtimestamp(state.watermark_ms / 1000, UTC)
    spec = state.spec
    # A window's score covers the hour ending with it, so a change to one bucket changes the scores of the
    # later windows whose hour includes it: re-emit those too, so every stored row is current.
    affected = {
        (grid_id, later)
        for grid_id, start in touched
        for later in state.buckets.get(grid_id, {})
        if start <= later < start + spec.hop_seconds
    }
    for grid_id, start in sorted(affected):
        assessment = state.assess_hop(grid_id, start, index, baseline)
        bucket = state.buckets[grid_id][start]
        result.window_rows.append(
            WindowRow.build(grid_id, start, spec.bucket_seconds, bucket.counts, assessment, index, version)
        )

    # Only grids off plain green are remembered: a grid that comes back to green with a zero score gets a
    # last update and is forgotten, so the state holds exactly the grids the map shows in colour.
    changed_risks, forgotten = [], []
    current = state.current_bucket
    baseline_version = baseline.version if baseline is not None else ""
    for grid_id in sorted(state.grids_to_evaluate({grid for grid, _ in touched})):
        assessment, shown = state.assess_grid(grid_id, index, baseline)
        previous = state.risks.get(grid_id)
        plain = assessment.score == 0 and shown is Level.GREEN
        if previous is None and plain:
            continue
        risk = GridRisk(assessment.score, shown, version, assessment.dominant_source, assessment.window_events)
        if previous is not None and previous.same_values(risk):
            continue
        previous_level = previous.level if previous else None
        update = RiskUpdate.build(
            grid_id, as_of, assessment, shown, previous_level, index.version, version, baseline_version
        )
        result.risk_updates.append(update)
        alert = alert_for(
            grid_id, update.previous_level, update.level, update.score, as_of, version, update.explanation(),
            index.version,
        )  # fmt: skip
        if alert is not None:
            result.alerts.append(alert)
        if plain:
            del state.risks[grid_id]
            forgotten.append(grid_id)
        else:
            state.risks[grid_id] = risk
            changed_risks.append(grid_id)
    state.evaluated_bucket = current
    state.forget_assessments()
    expired = state.expire()
    result.checkpoint = list(state.checkpoint(sorted(touched), changed_risks, expired, forgotten))
