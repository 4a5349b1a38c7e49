"""The records of the events topic between the consumer's fetches and the worker's batches (no Faust streams).

Faust's per-record path (Message, conductor, channel queue, stream Event, acks) cost ~80 µs a record, a ceiling of
~12,000 records/s before the worker did anything. The consumer (``rewinding_consumer`` in streams/app.py) puts what
it fetched of the events topic here as pipeline Records, and a task of the app takes them in batches for
``Worker.handle_taken``; Faust keeps the group, the table and the commits.

:class:`FetchedRecords` is the buffer in between, with no I/O of its own:

- bounded: the fetch waits for :meth:`room` while ``max_records`` records or ``max_bytes`` of values are waiting (one
  fetch more may land on top), so a worker behind its input holds about two batches, not the topic;
- batches like ``take_events``: :meth:`take` hands out at most ``max_records`` records and ``max_bytes`` of values
  (at least one record), shared evenly among the partitions waiting, each partition's in the order fetched;
  :meth:`wait_ready` returns once that much is waiting, or once the oldest record waiting has waited ``within``;
- :meth:`drop` forgets the records of partitions that were sought or revoked: they are never handed out (the seek
  reads them again, or their next owner does);
- :meth:`take` puts the batch "in hand" until :meth:`release`; :meth:`settled` waits for that, so a revocation lets
  the batch in progress finish before the partitions go.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pingan.streams.pipeline import Record


@dataclass(slots=True)
class _Run:
    """Consecutive fetched records of one partition, and when they arrived."""

    records: list[Record]
    arrived: float
    size: int


class FetchedRecords:
    def __init__(
        self, max_records: int, within: float, max_bytes: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("a batch must be able to hold a record")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.within = within
        self._clock = clock
        # Per partition with records waiting, its runs in fetch order (partitions in the order they came).
        self._waiting: dict[int, deque[_Run]] = {}
        self.count = 0  # records waiting
        self.bytes = 0  # bytes of their values
        self.in_hand = False  # a batch was taken and not yet released
        # Replaced at each change: a waiter waits on the one it checked its condition against (a broadcast).
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float | None = None) -> None:
        changed = self._changed
        if timeout is None:
            await changed.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    def has_room(self) -> bool:
        return self.count < self.max_records and self.bytes < self.max_bytes

    async def room(self) -> None:
        """Wait until fewer than a batch of records (and of bytes) are waiting."""
        while not self.has_room():
            await self._wait_change()

    def put(self, partition: int, records: Sequence[Record]) -> None:
        """Records of one partition, in offset order, as fetched (after those fetched before them)."""
        if not records:
            return
        size = sum(len(record.value) for record in records)
        self._waiting.setdefault(partition, deque()).append(_Run(list(records), self._clock(), size))
        self.count += len(records)
        self.bytes += size
        self._notify()

    def drop(self, partitions: Iterable[int]) -> int:
        """Forget the waiting records of these partitions; returns how many there were."""
        dropped = 0
        for partition in set(partitions):
            runs = self._waiting.pop(partition, None)
            if runs:
                dropped += sum(len(run.records) for run in runs)
                self.bytes -= sum(run.size for run in runs)
        if dropped:
            self.count -= dropped
            self._notify()
        return dropped

    def partitions(self) -> set[int]:
        return set(self._waiting)

    def deadline(self) -> float | None:
        """When the waiting records make a batch however few they are (the oldest has waited ``within``)."""
        if not self._waiting:
            return None
        return min(runs[0].arrived for runs in self._waiting.values()) + self.within

    def ready(self) -> bool:
        if not self.has_room():
            return True
        deadline = self.deadline()
        return deadline is not None and self._clock() >= deadline

    async def wait_ready(self) -> None:
        while not self.ready():
            deadline = self.deadline()
            await self._wait_change(None if deadline is None else max(deadline - self._clock(), 0.001))

    def take(self) -> list[Record]:
        """The next batch: at most ``max_records`` records and ``max_bytes`` of values (at least one record), shared
        evenly among the partitions waiting (as Faust's round-robin delivery did), each in fetch order. It is in hand
        until :meth:`release`, even when empty."""
        batch: list[Record] = []
        budget = self.max_bytes
        full = False
        while self._waiting and not full and len(batch) < self.max_records:
            share = max(1, (self.max_records - len(batch)) // len(self._waiting))
            for partition in list(self._waiting):
                limit = min(share, self.max_records - len(batch))
                if limit <= 0:
                    full = True
                    break
                budget, full = self._pop(partition, limit, budget, batch)
                if full:
                    break
        self.count -= len(batch)
        self.bytes -= self.max_bytes - budget
        self.in_hand = True
        self._notify()
        return batch

    def _pop(self, partition: int, limit: int, budget: int, batch: list[Record]) -> tuple[int, bool]:
        """Move up to ``limit`` records of ``partition`` to ``batch`` within ``budget`` bytes (the first record of a
        batch always fits); returns the budget left and whether a record did not fit."""
        runs = self._waiting[partition]
        full = False
        while limit > 0 and runs and not full:
            run = runs[0]
            records = run.records
            cut = 0
            taken = 0
            while cut < len(records) and cut < limit:
                size = len(records[cut].value)
                if size > budget and (batch or cut):
                    full = True
                    break
                budget -= size
                taken += size
                cut += 1
            batch += records[:cut]
            limit -= cut
            if cut == len(records):
                runs.popleft()
            else:
                run.records = records[cut:]
                run.size -= taken
        if not runs:
            del self._waiting[partition]
        return budget, full

    def release(self) -> None:
        """The batch taken last is done with (handled, or given up)."""
        self.in_hand = False
        self._notify()

    async def settled(self) -> None:
        """Wait until no batch is in hand."""
        while self.in_hand:
            await self._wait_change()
