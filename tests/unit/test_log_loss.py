"""LogLossKeeper's search for a lost partition's stored events (pingan.streams.log_loss), over an in-memory stand-in
for ClickHouse that answers the two queries of pingan.store.events.open_window_events. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pingan.clock import FixedClock
from pingan.index.scoring import load_config
from pingan.settings import Settings
from pingan.store.client import Executor
from pingan.streams.log_loss import LogLossKeeper
from pingan.streams.pipeline import PipelineConfig
from pingan.streams.windows import PartitionState, WindowSpec

INDEX = load_config(Settings().risk_config_path)
SPEC = WindowSpec(300, 3600, 120, INDEX.quiet_windows, 10)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class StoredEvents:
    """Partition 0's stored on-time events, (event_id, grid_id, event time); the floors the newest was looked for
    from, and the log_losses rows written."""

    def __init__(self, events: list[tuple[str, str, datetime]]) -> None:
        self.events = events
        self.floors: list[datetime] = []
        self.losses: list[Sequence[Any]] = []

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        assert params is not None
        if "max(event_time)" in sql:
            self.floors.append(params["floor"])
            times = [at for _, _, at in self.events if at >= params["floor"]]
            return [(int(max(times).timestamp()) if times else 0,)]
        since = params["since"]
        return [(event_id, grid_id, "call110", "dispute", 2, int(at.timestamp() * 1000))
                for event_id, grid_id, at in self.events if at.timestamp() >= since]  # fmt: skip

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        assert table == "log_losses"
        self.losses += rows


def _keeper(stored: StoredEvents) -> LogLossKeeper:
    async def storage(work: Callable[[Executor], Any]) -> Any:
        return work(stored)

    pipeline = PipelineConfig(index=INDEX, partitions=1)
    return LogLossKeeper("w", "t.events", SPEC, pipeline, storage, FixedClock(NOW), timedelta(weeks=4))


async def test_a_partition_that_keeps_up_is_found_within_the_span_its_state_keeps() -> None:
    stored = StoredEvents([("a", "G1", NOW - timedelta(minutes=30)), ("b", "G1", NOW - timedelta(minutes=5))])
    state = await _keeper(stored).restored(0, PartitionState(SPEC))
    assert stored.floors == [NOW - timedelta(seconds=SPEC.kept_seconds)]
    assert sum(b.events for b in state.buckets["G1"].values()) == 2


async def test_a_feed_days_behind_is_found_over_the_baseline_history_with_its_whole_span() -> None:
    # Stopped three days ago: nothing after the first floor, found from the second; the replay reaches the span
    # back from that newest event, not from the floor.
    last = NOW - timedelta(days=3)
    stored = StoredEvents([("old", "G1", last - timedelta(hours=3)), ("a", "G1", last - timedelta(minutes=50)),
                           ("b", "G1", last)])  # fmt: skip
    state = await _keeper(stored).restored(0, PartitionState(SPEC))
    assert stored.floors == [NOW - timedelta(seconds=SPEC.kept_seconds), NOW - timedelta(weeks=4)]
    assert sum(b.events for b in state.buckets["G1"].values()) == 2  # "old" is beyond the span
    assert state.watermark_ms == int(last.timestamp() * 1000)
    assert len(stored.losses) == 1  # the state_lost record


async def test_nothing_stored_within_the_history_is_nothing_lost() -> None:
    stored = StoredEvents([("ancient", "G1", NOW - timedelta(weeks=5))])
    empty = PartitionState(SPEC)
    assert await _keeper(stored).restored(0, empty) is empty
    assert len(stored.floors) == 2 and stored.losses == []
