"""Two workers in one consumer group against one alone: a join, a SIGKILL and a rejoin on a live stream.

Used by tests/integration/test_multi_worker.py (identical results required) and bench/rebalance_stall.py
(the stalls, for docs/benchmarks.md). While the stream flows at a steady rate, a sampler records every
partition's stored row count every 0.1 s; a stall is then read off that timeline around each membership
change (``stalls``, pure).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import re
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer

from pingan.grids import GridRegistry
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import DriverExecutor, connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from tests.support.events import mixed_stream
from tests.support.processes import ChildProcess, wait_for

# What must be identical between the group and the single worker: one query per table, keyed by its first
# two columns (alerts join once their batch-independence is fixed: one more line).
RESULT_QUERIES = {
    "events": "SELECT uniqExact(event_id), countIf(late = 1) FROM events FINAL",
    "windows": "SELECT grid_id, toUInt32(window_start), events, weighted, score, level "
    "FROM grid_windows FINAL ORDER BY grid_id, window_start",
    # Risk is decided at steps of event time: as_of too is the same whatever the batches and the rebalances.
    "risk": "SELECT grid_id, toUInt32(as_of), score, level, window_events, dominant_source FROM risk_latest FINAL "
    "WHERE score > 0 ORDER BY grid_id",
    "dead_letters": "SELECT count() FROM dead_letters FINAL",
    "risk_updates": "SELECT grid_id, version, score, level, previous_level, live_level FROM risk_updates FINAL "
    "ORDER BY grid_id, version",
    "alerts": "SELECT alert_id, kind, level, previous_level, score FROM alerts FINAL ORDER BY alert_id",
}
log = logging.getLogger(__name__)
_RESTORED = re.compile(rb"partition (\d+): restored")
SAMPLE_INTERVAL_S = 0.1


def results(executor: DriverExecutor) -> dict[str, list[tuple]]:
    return {name: executor.query(sql) for name, sql in RESULT_QUERIES.items()}


def differences(mine: dict[str, list[tuple]], theirs: dict[str, list[tuple]]) -> dict[str, list]:
    """Per table, the keys whose rows differ (first eight), for a readable failure."""
    out = {}
    for table in mine:
        a = {row[:2]: row[2:] for row in mine[table]}
        b = {row[:2]: row[2:] for row in theirs[table]}
        differ = sorted(((k, a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)), key=str)
        if differ:
            out[table] = differ[:8]
    return out


def missing(group_db: DriverExecutor, single_db: DriverExecutor) -> str:
    """The events the single worker stored and the group did not, with their (partition, offset)."""
    sql = "SELECT event_id, min(kafka_partition), min(kafka_offset) FROM events GROUP BY event_id"
    mine = {row[0] for row in group_db.query(sql)}
    theirs = {row[0]: (row[1], row[2]) for row in single_db.query(sql)}
    lost = sorted(position for event_id, position in theirs.items() if event_id not in mine)
    return f"events the group never stored: {len(lost)}, at (partition, offset) {lost[:20]}"


class ScenarioFailed(AssertionError):
    """The group did not store every event; ``result`` still holds the stalls measured before that."""

    def __init__(self, message: str, result: ScenarioResult) -> None:
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------------------------------------------
# Stalls: pure functions of a sampled timeline
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stall:
    """Around one membership change at ``at`` (monotonic seconds)."""

    change: str
    at: float
    # the longest time in which no partition stored anything
    all_partitions_s: float
    # the longest time one partition stored nothing (for a SIGKILL: the victim's partitions, until taken over)
    one_partition_s: float
    # from the change until the last partition to stall stored again (for a SIGKILL: SIGKILL -> ready)
    until_all_flowing_s: float


def progress_times(timeline: Sequence[tuple[float, dict[int, int]]]) -> dict[int, list[float]]:
    """For each partition, the sample times at which its row count had grown since the previous sample."""
    times: dict[int, list[float]] = {}
    previous: dict[int, int] = {}
    for at, counts in timeline:
        for partition, count in counts.items():
            if count > previous.get(partition, 0):
                times.setdefault(partition, []).append(at)
            previous[partition] = max(count, previous.get(partition, 0))
    return times


def _gaps_by_change(times: Sequence[float], changes: Sequence[float]) -> dict[int, tuple[float, float]]:
    """The longest gap between consecutive progress times attributed to each change, as (length, end).

    A gap belongs to the latest change before it ended: a partition stalled by a SIGKILL has its last
    progress just before the kill and its next one after the takeover, and a gap spanning a change was
    caused by it. Gaps that ended before the first change are not about any change.
    """
    best: dict[int, tuple[float, float]] = {}
    for before, after in itertools.pairwise(times):
        index = bisect.bisect_left(changes, after) - 1
        if index < 0:
            continue
        if after - before > best.get(index, (0.0, 0.0))[0]:
            best[index] = (after - before, after)
    return best


def stalls(timeline: Sequence[tuple[float, dict[int, int]]], changes: Sequence[tuple[str, float]]) -> list[Stall]:
    """The stall each change caused, read off the sampled per-partition row counts."""
    per_partition = progress_times(timeline)
    anywhere = sorted({t for times in per_partition.values() for t in times})
    at = [when for _, when in changes]
    overall = _gaps_by_change(anywhere, at)
    partitions = [_gaps_by_change(times, at) for times in per_partition.values()]
    out = []
    for index, (name, when) in enumerate(changes):
        longest = [gaps[index] for gaps in partitions if index in gaps]
        out.append(
            Stall(
                name,
                when,
                all_partitions_s=round(overall.get(index, (0.0, 0.0))[0], 2),
                one_partition_s=round(max((g for g, _ in longest), default=0.0), 2),
                until_all_flowing_s=round(max((end - when for _, end in longest), default=0.0), 2),
            )
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# The live parts: a paced producer and a sampler, each in a thread of its own
# --------------------------------------------------------------------------------------------------------------


class PacedProducer(threading.Thread):
    """Produces ``messages`` at about ``rate`` per second until ``finish()``, then the rest at once."""

    def __init__(self, settings: Settings, messages: list[tuple[bytes | None, bytes]], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.messages, self.rate = settings, messages, rate
        self._finish = threading.Event()
        self.error: BaseException | None = None

    def finish(self) -> None:
        self._finish.set()

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # reported by the scenario
            self.error = exc

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            step, sent, started = 0.05, 0, time.monotonic()
            while sent < len(self.messages):
                due = len(self.messages) if self._finish.is_set() else int((time.monotonic() - started) * self.rate)
                pending = [await producer.send(self.settings.topic_events, v, key=k)
                           for k, v in self.messages[sent:max(sent, due)]]  # fmt: skip
                await asyncio.gather(*pending)
                sent = max(sent, due)
                await asyncio.sleep(step)
        finally:
            await producer.stop()


class ProgressSampler(threading.Thread):
    """Every 0.1 s, the stored row count of each partition (monotonic time, {partition: rows})."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.timeline: list[tuple[float, dict[int, int]]] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        executor = connect(self.settings)  # a client of its own: they are not thread-safe
        try:
            while not self._halt.is_set():
                rows = executor.query("SELECT kafka_partition, count() FROM events GROUP BY kafka_partition")
                self.timeline.append((time.monotonic(), {int(p): int(c) for p, c in rows}))
                self._halt.wait(SAMPLE_INTERVAL_S)
        finally:
            executor.close()

    def flowing_since(self, since: float, partitions: int) -> bool:
        """Whether every partition stored something after ``since``."""
        times = progress_times(self.timeline)
        return len(times) >= partitions and all(any(t > since for t in ts) for ts in times.values())


def restored_partitions(log_path: Path, offset: int = 0) -> set[int]:
    """Partitions a worker started processing (its ``partition N: restored`` lines) after byte ``offset``."""
    data = log_path.read_bytes()[offset:] if log_path.exists() else b""
    return {int(m[1]) for m in _RESTORED.finditer(data)}


def log_size(log_path: Path) -> int:
    return log_path.stat().st_size if log_path.exists() else 0


# --------------------------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    group: dict[str, list[tuple]]
    single: dict[str, list[tuple]]
    distinct_valid: int
    stalls: list[Stall]
    # partitions the second worker processed after joining and after rejoining, and the first after the kill
    joined: set[int] = field(default_factory=set)
    rejoined: set[int] = field(default_factory=set)
    taken_over: set[int] = field(default_factory=set)
    logs: dict[str, Path] = field(default_factory=dict)

    def log_lines(self, needle: str) -> list[str]:
        """Lines of the group's worker logs that contain ``needle``, prefixed with the log's name."""
        return [f"{name}: {line}" for name, path in self.logs.items() if name != "single"
                for line in path.read_text(errors="replace").splitlines() if needle in line]  # fmt: skip


def run_scenario(
    base: Settings, tmp_path: Path, *, events_count: int = 15_000, rate: float = 150.0, leave: bool = False
) -> ScenarioResult:
    """Worker A alone, B joins, B is SIGKILLed, B rejoins (and with ``leave``, stops with SIGTERM); a single
    worker reads the same topic meanwhile.

    Each step waits until the rebalance it caused is done (the worker that gained partitions logged them and
    every partition stored again), so each stall is measured on its own.
    """
    registry = GridRegistry.load(base.grid_registry_path)
    grid_ids = [g.grid_id for g in registry.grids[:60]]
    # No heartbeats: the idle end of the stream would add each worker's own clock to its results.
    base = base.model_copy(update={"batch_max_events": 500, "batch_within_seconds": 0.1, "heartbeat_seconds": 0})
    group = base.model_copy(update={"worker_id": f"w-{base.topic_prefix}group"})
    single = base.model_copy(update={
        "worker_id": f"w-{base.topic_prefix}single", "clickhouse_database": f"{base.clickhouse_database}_single",
    })  # fmt: skip
    # One group, two processes: separate data dirs (Faust's own files), the same group id.
    worker_a = group.model_copy(update={"data_dir": tmp_path / "a"})
    worker_b = group.model_copy(update={"data_dir": tmp_path / "b"})
    messages, distinct_valid = mixed_stream(grid_ids, datetime.now(UTC) - timedelta(hours=3), timedelta(hours=3),
                                            events_count)  # fmt: skip
    asyncio.run(ensure_topics(base))
    prepare_database(group)
    prepare_database(single)
    logs = {"single": tmp_path / "single.log", "a": tmp_path / "a.log", "b": tmp_path / "b.log",
            "b-rejoined": tmp_path / "b-rejoined.log"}  # fmt: skip
    producer = PacedProducer(base, messages, rate)
    sampler = ProgressSampler(group)
    partitions = base.topic_partitions
    children = [
        ChildProcess("worker", single, logs["single"]).start(),
        ChildProcess("worker", worker_a, logs["a"]).start(),
    ]
    killed: list[ChildProcess] = []
    changes: list[tuple[str, float]] = []
    group_db, single_db = connect(group), connect(single)
    result = ScenarioResult({}, {}, distinct_valid, [], logs=logs)

    def alive() -> None:
        for child in children:
            assert child.alive or child in killed, child.log_tail()

    def rebalanced(log_path: Path, offset: int, what: str) -> tuple[set[int], float]:
        """Wait until the worker that gains partitions logs them, then until every partition stores again."""

        def owned() -> set[int] | None:
            alive()
            return restored_partitions(log_path, offset) or None

        partitions_seen = wait_for(owned, timeout=90, what=f"{what}: partitions assigned")
        seen = time.monotonic()
        log.info("%s: partitions %s at +%.1fs", what, sorted(partitions_seen), seen - started)

        def flowing() -> bool:
            alive()
            return sampler.flowing_since(seen, partitions)

        wait_for(flowing, timeout=60, what=f"{what}: every partition storing again")
        return partitions_seen, seen

    started = time.monotonic()
    try:
        producer.start()
        sampler.start()
        rebalanced(logs["a"], 0, "worker A alone")
        # A join.
        changes.append(("join", time.monotonic()))
        children.append(ChildProcess("worker", worker_b, logs["b"]).start())
        result.joined, _ = rebalanced(logs["b"], 0, "worker B joining")
        # A SIGKILL of B while it works: A takes its partitions over once B's session times out.
        offset_a = log_size(logs["a"])
        changes.append(("SIGKILL", time.monotonic()))
        children[-1].kill()
        killed.append(children[-1])
        rebalanced(logs["a"], offset_a, "worker A taking over")
        # A rejoin.
        changes.append(("rejoin", time.monotonic()))
        children.append(ChildProcess("worker", worker_b, logs["b-rejoined"]).start())
        result.rejoined, settled = rebalanced(logs["b-rejoined"], 0, "worker B rejoining")
        if leave:
            # A graceful leave: SIGTERM, B sends LeaveGroup, no session timeout to wait out.
            offset_a = log_size(logs["a"])
            changes.append(("leave (SIGTERM)", time.monotonic()))
            leaver = children[-1]
            assert leaver.process is not None
            leaver.process.send_signal(signal.SIGTERM)
            killed.append(leaver)
            _, settled = rebalanced(logs["a"], offset_a, "worker A after B left")
        # Steady flow for a second after the last rebalance, so its stall has an end on the timeline.
        wait_for(lambda: sampler.flowing_since(settled + 1.0, partitions), timeout=60, what="steady flow")
        result.taken_over = restored_partitions(logs["a"], offset_a)
        result.stalls = stalls(list(sampler.timeline), changes)
        log.info("steady after the last change at +%.1fs; producing the rest", time.monotonic() - started)
        producer.finish()
        producer.join(timeout=60)
        assert producer.error is None, producer.error
        for name, db in (("single", single_db), ("group", group_db)):

            def all_stored(db: DriverExecutor = db) -> bool:
                alive()
                return events.count_distinct(db) == distinct_valid

            try:
                wait_for(all_stored, timeout=120, what=f"every valid event stored by the {name} ({distinct_valid})")
            except AssertionError as exc:
                errors = "\n".join(result.log_lines("ERROR")[:20])
                message = f"{exc}\n{missing(group_db, single_db)}\nworker errors:\n{errors}"
                raise ScenarioFailed(message, result) from None
        log.info("every event stored by both at +%.1fs", time.monotonic() - started)
        sampler.stop()
        # Windows and risk of the last batch land just after its events: poll until both agree.
        with contextlib.suppress(AssertionError):  # the caller compares and reports the differences
            wait_for(lambda: results(group_db) == results(single_db), timeout=30, what="identical results")
        result.group, result.single = results(group_db), results(single_db)
        log.info("results compared at +%.1fs", time.monotonic() - started)
        return result
    finally:
        producer.finish()
        sampler.stop()
        stopping = time.monotonic()
        for child in children:  # together: a worker may take seconds to honour SIGTERM
            if child.alive and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            child.stop()
        log.info("workers stopped in %.1fs", time.monotonic() - stopping)
        group_db.close()
        single_db.close()
