"""Latency from an event's production to its effect on ``GET /v1/grids/risk``, at offered rates (make bench).

A `pingan worker` and a `pingan api` run as child processes, at their defaults (the worker takes batches
within 0.2 s, the API re-reads ``risk_latest`` at most every 0.5 s). A paced producer, the project's
:class:`~pingan.producers.kafka.EventProducer` (event batch records), writes the bench's mix of feeds to the
busy grids at the offered rate, event times = now. Every ``MARKER_EVERY_S`` it adds a marker: one event in
a grid that no other event touches, whose production time (the wall clock as it is handed to the producer)
is noted. A poller asks the API every ``POLL_S`` for the grids changed since its last version (``?since=``,
as the map page does) and notes when each marker's grid first shows an event in its window
(``window_events``); the latency is the difference.

The worker keeps up when, at the end of the run, the events produced but not yet stored in ClickHouse are
fewer than ``KEEP_UP_S`` seconds of the offered rate (a batch being taken, processed and written), and the
markers of the run's second half took at most ``TREND_S`` longer (median) than those of its first half (a
worker at 90 % of the offered rate falls behind by about that much in 10 s). Otherwise the backlog grows with
every second of the run, a percentile would only say how long the run was, and the result says so with the
lag instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.workload import BUSY_GRIDS, SOURCES, envelope
from pingan.grids import GridRegistry
from pingan.producers.kafka import EventProducer
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import DriverExecutor, connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from tests.support.processes import ChildProcess, free_port, wait_for

RUN_S = 20.0
MARKER_EVERY_S = 0.1
POLL_S = 0.05
TICK_S = 0.02
KEEP_UP_S = 3.0
TREND_S = 1.0
DRAIN_S = 15.0  # how long after the run the poller waits for markers still on their way (worker keeping up)


@dataclass
class Latency:
    """One offered rate: what was sent, what the map showed when, and the lag left at the end."""

    rate: float
    seconds: float = 0.0
    sent: int = 0
    lag: int = 0  # events produced and not stored when production stopped
    sent_at: dict[str, float] = field(default_factory=dict)  # marker grid -> production time
    seen_at: dict[str, float] = field(default_factory=dict)  # marker grid -> first poll that showed it

    @property
    def produced(self) -> int:
        return self.sent + len(self.sent_at)

    @property
    def keeps_up(self) -> bool:
        return self.lag <= self.rate * KEEP_UP_S and self.trend <= TREND_S

    @property
    def latencies(self) -> list[float]:
        return sorted(self.seen_at[g] - self.sent_at[g] for g in self.seen_at)

    @property
    def trend(self) -> float:
        """Median latency of the markers sent in the second half of the run minus that of the first half
        (markers never shown count as infinitely late)."""
        in_order = [self.seen_at.get(g, float("inf")) - sent for g, sent in self.sent_at.items()]  # as sent
        half = len(in_order) // 2
        if half == 0:
            return 0.0
        return statistics.median(in_order[half:]) - statistics.median(in_order[:half])

    def percentile(self, q: float) -> float:
        values = self.latencies
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]

    def summary(self) -> str:
        if not self.keeps_up:
            return (f"backlog grows: p99 n/a, lag {self.lag:,} events ({self.lag / self.rate:.1f} s of production) "
                    f"after {self.seconds:.0f} s, markers {self.trend:+.1f} s later in the second half")  # fmt: skip
        if not self.seen_at:
            return "no marker shown"
        return f"p50 {self.percentile(50):.2f} s, p99 {self.percentile(99):.2f} s"


class MarkerGrids:
    """Grids no other event of the run touches, handed out one per marker."""

    def __init__(self, registry: GridRegistry) -> None:
        self._free: Iterator[str] = iter(g.grid_id for g in registry.grids[BUSY_GRIDS:])

    def take(self) -> str:
        return next(self._free)


def marker(grid_id: str, number: int) -> dict[str, Any]:
    return envelope(number, "call110", grid_id, datetime.now(UTC).isoformat(), prefix="marker")


async def _produce(producer: EventProducer, busy: Sequence[str], grids: MarkerGrids, run: Latency) -> None:
    """Send at ``run.rate`` events/s for RUN_S seconds, with a marker every MARKER_EVERY_S."""
    rng = random.Random(3)
    started = time.monotonic()
    next_marker = 0.0
    while (elapsed := time.monotonic() - started) < RUN_S:
        due = int(run.rate * elapsed) - run.sent
        at = datetime.now(UTC).isoformat()
        batch = [envelope(run.sent + k, rng.choice(SOURCES), rng.choice(busy), at, prefix=f"l{run.rate:.0f}")
                 for k in range(due)]  # fmt: skip
        if elapsed >= next_marker:
            grid_id = grids.take()
            batch.append(marker(grid_id, len(run.sent_at)))
            run.sent_at[grid_id] = time.time()
            next_marker += MARKER_EVERY_S
        await producer.send_many(batch)
        run.sent += due
        await asyncio.sleep(TICK_S)
    run.seconds = time.monotonic() - started


async def _poll(client: httpx.AsyncClient, base: str, watched: dict[str, float], seen: dict[str, float],
                until: asyncio.Event) -> None:  # fmt: skip
    """Note when each watched grid first shows an event in its window, until ``until`` is set."""
    version: int | None = None
    while not until.is_set():
        query = "" if version is None else f"?since={version}"
        with contextlib.suppress(httpx.HTTPError):
            body = (await client.get(f"{base}/v1/grids/risk{query}")).json()
            now = time.time()
            version = body["summary"]["version"]
            for grid in body["grids"]:
                if grid["window_events"] and grid["grid_id"] in watched and grid["grid_id"] not in seen:
                    seen[grid["grid_id"]] = now
        await asyncio.sleep(POLL_S)


async def _stored(executor: DriverExecutor) -> int:
    return await asyncio.to_thread(events.count_rows, executor)


async def offered(settings: Settings, registry: GridRegistry, base: str, executor: DriverExecutor, rate: float,
                  grids: MarkerGrids) -> Latency:  # fmt: skip
    run = Latency(rate)
    busy = [g.grid_id for g in registry.grids[:BUSY_GRIDS]]
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=5.0) as client, EventProducer(settings, registry) as producer:
        poller = asyncio.create_task(_poll(client, base, run.sent_at, run.seen_at, stop))
        stored_before = await _stored(executor)
        await _produce(producer, busy, grids, run)
        run.lag = run.produced - (await _stored(executor) - stored_before)
        deadline = time.monotonic() + (DRAIN_S if run.keeps_up else 0.0)
        while len(run.seen_at) < len(run.sent_at) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        stop.set()
        await poller
    return run


async def _drained(executor: DriverExecutor, produced: int, timeout: float) -> bool:
    """Wait until ClickHouse holds ``produced`` events (what an earlier run left behind is stored)."""
    deadline = time.monotonic() + timeout
    while await _stored(executor) < produced:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def _warm_up(settings: Settings, registry: GridRegistry, base: str, grids: MarkerGrids) -> int:
    """A marker a second until the map shows one: the worker has joined its group and the API reads its rows.
    Returns the markers sent."""
    seen: dict[str, float] = {}
    watched: dict[str, float] = {}
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=5.0) as client, EventProducer(settings, registry) as producer:
        poller = asyncio.create_task(_poll(client, base, watched, seen, stop))
        deadline = time.monotonic() + 120
        while not seen:
            if time.monotonic() > deadline:
                raise RuntimeError("the map showed no warm-up event within 120 s")
            grid_id = grids.take()
            watched[grid_id] = time.time()
            await producer.send(marker(grid_id, -len(watched)))
            await asyncio.sleep(1.0)
        stop.set()
        await poller
    return len(watched)


def measure_latency(base_settings: Settings, registry: GridRegistry, rates: Sequence[float],
                    log_dir: Path) -> list[Latency]:  # fmt: skip
    """A fresh worker and API on topics and a database of their own; the offered rates, lowest first (a rate
    the worker cannot keep up with leaves a backlog that a later run would inherit)."""
    settings = base_settings.model_copy(update={
        "topic_prefix": "benchl.", "clickhouse_database": "bench_l", "worker_id": "bench-l",
        "api_port": free_port(), "heartbeat_seconds": Settings.model_fields["heartbeat_seconds"].default,
    })  # fmt: skip
    asyncio.run(ensure_topics(settings))
    prepare_database(settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    worker = ChildProcess("worker", settings, log_dir / "latency-worker.log").start()
    api = ChildProcess("api", settings, log_dir / "latency-api.log").start()
    executor = connect(settings)
    try:
        wait_for(lambda: _answers(base, api), timeout=60, what="the API to answer")
        grids = MarkerGrids(registry)
        warm_up = asyncio.run(_warm_up(settings, registry, base, grids))
        runs: list[Latency] = []
        for rate in sorted(rates):
            produced = warm_up + sum(r.produced for r in runs)
            if not asyncio.run(_drained(executor, produced, timeout=60)):
                break  # the worker is still behind on the last run: this one would measure that backlog
            runs.append(asyncio.run(offered(settings, registry, base, executor, rate, grids)))
            if not worker.alive:
                raise RuntimeError(f"the worker stopped:\n{worker.log_tail()}")
        return runs
    finally:
        executor.close()
        api.stop()
        worker.stop()


def _answers(base: str, api: ChildProcess) -> bool:
    if not api.alive:
        raise RuntimeError(f"the API stopped:\n{api.log_tail()}")
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    return False
