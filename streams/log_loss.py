"""What the worker does when the broker lost a log: record it where the API can see it, and make the window
state of the partitions concerned whole again (the I/O around pingan.streams.rebuild).

The record goes to ClickHouse (``log_losses``), not to a status topic on the broker: the broker is what lost
its log, and a worker that restarts with it gone must still be able to say so. ``/readyz`` and ``/metrics``
read it from there (api/readiness.py, api/metrics.py).

Two ways a partition's state is found lost:
- its input log is shorter than what the checkpoint did, or holds other records (pingan.streams.app's
  ``rewinding_consumer``): the worker still has the state it built in memory ("kept"), unless it had none, in
  which case it is rebuilt from ClickHouse;
- its changelog holds nothing while ClickHouse has events of the partition (a worker started after the broker
  came back empty: neither the checkpoint nor the committed offsets survived to tell): rebuilt from ClickHouse.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any, TypeVar

from pingan.clock import Clock
from pingan.store import events, log_losses
from pingan.store.client import Executor
from pingan.store.log_losses import LogLoss
from pingan.streams.pipeline import PipelineConfig
from pingan.streams.rebuild import StoredEvent, newest_event_floors, rebuild_state, replay_span_seconds
from pingan.streams.windows import PartitionState, WindowSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


class LogLossKeeper:
    """Records lost logs in ClickHouse and rebuilds lost partition state from the stored events.

    ``storage`` runs a function with a ClickHouse client on the worker's storage thread, retried while
    ClickHouse is away (StorageWriter.call). ``history`` is how far back the baselines learn from
    (``baseline_history_weeks``): the oldest newest-event a rebuild looks for (rebuild.newest_event_floors)."""

    def __init__(
        self, worker: str, topic: str, spec: WindowSpec, pipeline: PipelineConfig,
        storage: Callable[[Callable[[Executor], Any]], Awaitable[Any]], clock: Clock, history: timedelta,
    ) -> None:  # fmt: skip
        self.worker, self.topic, self.spec, self.pipeline = worker, topic, spec, pipeline
        self._storage = storage
        self._clock = clock
        self._history = history
        self.rebuilt_partitions = 0

    async def _stored_state(self, partition: int) -> tuple[PartitionState, int]:
        """The partition's state replayed from ClickHouse, and how many events that took (0: none stored)."""
        span = replay_span_seconds(self.spec)
        rows: list[Any] = []
        for floor in newest_event_floors(self.spec, self._clock.now(), self._history):
            rows = await self._storage(
                lambda c, floor=floor: events.open_window_events(c, partition, span_seconds=span, floor=floor)
            )
            if rows:
                break
        state = rebuild_state((StoredEvent(*row) for row in rows), self.spec, self.pipeline)
        if rows:
            self.rebuilt_partitions += 1
            log.warning("partition %d: window state rebuilt from %d stored events (%d grids, watermark %d)",
                        partition, len(rows), len(state.buckets), state.watermark_ms)  # fmt: skip
        return state, len(rows)

    async def restored(self, partition: int, state: PartitionState) -> PartitionState:
        """The state to use for a partition just restored from its changelog: that one, unless the changelog
        held nothing while ClickHouse has the partition's events (then the state rebuilt from those)."""
        if state.done_offset >= 0 or not state.empty:
            return state
        rebuilt, count = await self._stored_state(partition)
        if not count:
            return state  # a partition nothing was ever stored from: nothing is lost
        now = self._clock.now()
        log.error("partition %d of %s: the window-state changelog holds nothing, but ClickHouse has %d events of "
                  "its open windows: the changelog was lost (a broker that came back empty?)", partition, self.topic,
                  count)  # fmt: skip
        loss = LogLoss(now, self.worker, self.topic, partition, log_losses.STATE_LOST, -1, -1)
        await self._record([loss.done(log_losses.CLICKHOUSE, count, now)])
        return rebuilt

    async def log_lost(self, lost: dict[int, tuple[int, int]], states: MutableMapping[int, PartitionState]) -> None:
        """Record partitions whose input log was lost ({partition: (records done, end of the log now)}); a
        partition whose state this worker does not have is rebuilt from ClickHouse (``states`` is updated)."""
        now = self._clock.now()
        pending = [LogLoss(now, self.worker, self.topic, p, log_losses.LOG_LOST, done, end) for p, (done, end)
                   in sorted(lost.items())]  # fmt: skip
        await self._record(pending)  # visible before the rebuild, which may take a while
        finished = []
        for loss in pending:
            state = states.get(loss.partition)
            if state is not None and not state.empty:
                kept = sum(b.events for buckets in state.buckets.values() for b in buckets.values())
                finished.append(loss.done(log_losses.KEPT, kept, now))
                continue
            rebuilt, count = await self._stored_state(loss.partition)
            states[loss.partition] = rebuilt
            finished.append(loss.done(log_losses.CLICKHOUSE, count, self._clock.now()))
        await self._record(finished)

    async def _record(self, losses: list[LogLoss]) -> None:
        rejected = await self._storage(lambda c: log_losses.insert(c, losses))
        for loss, exc in rejected:
            log.error("ClickHouse refused a log_losses row, which is not stored: %s; row %r", exc, loss)
