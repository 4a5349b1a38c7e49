"""Window state rebuilt from the events ClickHouse stored: pure, no I/O.

A partition's window state lives in the worker's memory and in the window-state changelog. When both are
gone (the local broker came back empty and the worker restarted, or a worker starts on a changelog that holds
nothing while ClickHouse has the partition's events), waiting for the open windows to fill again would show a
wrong map for an hour. Every counted event is in ClickHouse, so the state is rebuilt from there: the open
windows' events are replayed by event time through the same code the pipeline runs (steps scored, buckets
expired, window rows and provisional risk as at the end of a batch), and what comes out is the state an
undisturbed worker would hold at that watermark.

The replayed events come from an old log: their offsets mean nothing in the new one, so the rebuilt state
starts the new log from offset 0 (``PartitionState.restart_log``: counts kept, duplicates told by event id,
every bucket and risk written to the changelog at the next checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pingan.streams.pipeline import BatchResult, PipelineConfig, _end_steps_before, _provisional, _window_rows
from pingan.streams.windows import PartitionState, WindowSpec


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """What the window state needs of one stored event (``pingan.store.events.open_window_events``)."""

    event_id: str
    grid_id: str
    source: str
    type: str
    severity: int
    event_time_ms: int


def replay_span_seconds(spec: WindowSpec) -> int:
    """How far before the newest stored event the replay must start: the oldest bucket a window still open at
    that watermark (or held by hysteresis) can read (the same span ``WindowSpec.is_expired`` keeps)."""
    return spec.kept_seconds


def newest_event_floors(spec: WindowSpec, now: datetime, history: timedelta) -> tuple[datetime, ...]:
    """Where to look for a partition's newest stored event, nearest first (each is a bound ClickHouse prunes
    the days before; the next is tried only when nothing is found after one):

    1. the oldest bucket the window state keeps at a watermark of now (``spec.kept_seconds`` before the clock):
       where a partition whose feed keeps up has its newest event;
    2. the start of the baseline history (``baseline_history_weeks``): a feed far behind the clock, or a
       partition that went quiet, still has state at the watermark it stopped at. Events older than the history
       the baselines are learned from are not looked for: such state is not rebuilt.

    The replay itself then reaches ``replay_span_seconds`` back from the newest event, whichever floor found it.
    """
    kept = now - timedelta(seconds=spec.kept_seconds)
    oldest = now - history
    return (kept, oldest) if oldest < kept else (kept,)


def rebuild_state(rows: Iterable[StoredEvent], spec: WindowSpec, config: PipelineConfig) -> PartitionState:
    """The state of one partition after its stored on-time events, replayed in event-time order.

    Rows may come in any order and may repeat an event (replays stored twice before ClickHouse merged them):
    they are sorted by (event time, event id) and each event id counts once per bucket, as in the pipeline.
    Late events must not be among them: they never changed the index.
    """
    state = PartitionState(spec)
    scratch = BatchResult()  # what the replay would write: already in ClickHouse, so dropped
    ordered = sorted(rows, key=lambda row: (row.event_time_ms, row.event_id))
    for position, row in enumerate(ordered):
        _end_steps_before(state, config, row.event_time_ms, scratch)
        state.apply(row.grid_id, row.event_time_ms, (row.source, row.type, row.severity), position, row.event_id)
    if ordered:
        # As at the end of a batch: the rows of the windows that changed, the provisional risk of pending grids.
        _window_rows(state, config, state.watermark_ms, scratch)
        _provisional(state, config, scratch)
    state.forget_assessments()
    state.expired.clear()  # buckets the replay expired were never in the new changelog
    state.restart_log()
    return state
