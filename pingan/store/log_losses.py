"""SQL of the ``log_losses`` table: partitions whose input log or window state the worker found lost, and
whether their window state is whole again (written by the worker, read by ``/readyz`` and ``/metrics``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pingan.store.client import Executor, Rejected, insert_isolating

TABLE = "log_losses"
COLUMNS = (
    "detected_at", "worker", "topic", "kafka_partition", "reason", "done_offset", "end_offset", "restart_offset",
    "rebuilt_from", "rebuilt_events", "rebuilt_at", "version",
)  # fmt: skip
LOG_LOST = "log_lost"  # the log is shorter than what was done in it, or holds other records
STATE_LOST = "state_lost"  # the changelog holds nothing, though ClickHouse has the partition's events
KEPT = "kept"  # the worker still had the partition's state in memory
CLICKHOUSE = "clickhouse"  # replayed from the events table
_NEVER = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class LogLoss:
    detected_at: datetime
    worker: str
    topic: str
    partition: int
    reason: str
    done_offset: int
    end_offset: int
    restart_offset: int = 0
    rebuilt_from: str = ""  # "" while the rebuild is pending
    rebuilt_events: int = 0
    rebuilt_at: datetime | None = None
    version: int = 1

    @property
    def rebuilt(self) -> bool:
        return self.rebuilt_at is not None

    def done(self, source: str, events: int, at: datetime) -> LogLoss:
        """The same loss, its state whole again (a row that replaces the first)."""
        return replace(self, rebuilt_from=source, rebuilt_events=events, rebuilt_at=at, version=self.version + 1)

    def as_row(self) -> tuple[Any, ...]:
        return (
            int(self.detected_at.timestamp()), self.worker, self.topic, self.partition, self.reason, self.done_offset,
            self.end_offset, self.restart_offset, self.rebuilt_from, self.rebuilt_events,
            int((self.rebuilt_at or _NEVER).timestamp()), self.version,
        )  # fmt: skip

    def document(self) -> dict[str, Any]:
        """The loss as ``/readyz`` reports it."""
        return {
            "detected_at": self.detected_at.isoformat(), "worker": self.worker, "topic": self.topic,
            "partition": self.partition, "reason": self.reason, "done_offset": self.done_offset,
            "end_offset": self.end_offset, "restart_offset": self.restart_offset, "rebuilt": self.rebuilt,
            "rebuilt_from": self.rebuilt_from or None, "rebuilt_events": self.rebuilt_events,
            "rebuilt_at": self.rebuilt_at.isoformat() if self.rebuilt_at else None,
        }  # fmt: skip


def insert(executor: Executor, losses: Sequence[LogLoss]) -> Rejected:
    return insert_isolating(executor, TABLE, COLUMNS, losses, LogLoss.as_row)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def recent(executor: Executor, since: datetime, *, limit: int = 100) -> list[LogLoss]:
    """Losses detected since ``since``, newest first (the latest version of each)."""
    rows = executor.query(
        f"""
        SELECT {", ".join(COLUMNS)}
        FROM log_losses FINAL
        WHERE detected_at >= %(since)s
        ORDER BY detected_at DESC, topic, kafka_partition, worker
        LIMIT %(limit)s
        """,
        {"since": since, "limit": limit},
    )
    out = []
    for detected, worker, topic, partition, reason, done, end, restart, source, count, rebuilt, version in rows:
        rebuilt_at = _utc(rebuilt)
        out.append(LogLoss(_utc(detected), worker, topic, int(partition), reason, int(done), int(end), int(restart),
                           source, int(count), None if rebuilt_at == _NEVER else rebuilt_at, int(version)))  # fmt: skip
    return out


def count_by_partition(executor: Executor) -> dict[tuple[str, int, str], tuple[int, int]]:
    """(topic, partition, reason) -> (losses ever detected, of them not yet rebuilt): the metrics' counters."""
    rows = executor.query(
        """
        SELECT topic, kafka_partition, reason, count(), countIf(rebuilt_at = toDateTime(0))
        FROM log_losses FINAL
        GROUP BY topic, kafka_partition, reason
        ORDER BY topic, kafka_partition, reason
        """
    )
    return {(topic, int(partition), reason): (int(n), int(pending)) for topic, partition, reason, n, pending in rows}
