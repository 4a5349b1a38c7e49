"""SQL of the ``dead_letters`` table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pingan.store.client import Executor, Rejected, insert_isolating

TABLE = "dead_letters"
COLUMNS = (
    "topic", "kafka_partition", "kafka_offset", "received_at", "kind", "field", "reason", "raw", "ingested_at",
)  # fmt: skip


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    received_at: datetime
    kind: str
    field: str
    reason: str
    raw: bytes


def row(letter: DeadLetter, *, ingested_at: datetime) -> tuple[Any, ...]:
    return (
        letter.topic, letter.partition, letter.offset, int(letter.received_at.timestamp()), letter.kind,
        letter.field, letter.reason, letter.raw.decode("utf-8", errors="replace"), int(ingested_at.timestamp()),
    )  # fmt: skip


def insert(executor: Executor, rows: Sequence[tuple[Any, ...]]) -> Rejected:
    """Insert dead-letter rows (see :func:`row`); returns the rows ClickHouse refused, the others stored."""
    return insert_isolating(executor, TABLE, COLUMNS, rows, lambda r: r)


def recent(executor: Executor, *, limit: int = 100) -> list[dict[str, Any]]:
    rows = executor.query(
        """
        SELECT topic, kafka_partition, kafka_offset, received_at, kind, field, reason, raw
        FROM dead_letters FINAL
        ORDER BY received_at DESC, kafka_offset DESC
        LIMIT %(limit)s
        """,
        {"limit": limit},
    )
    keys = ("topic", "partition", "offset", "received_at", "kind", "field", "reason", "raw")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def count_by_kind(executor: Executor) -> dict[str, int]:
    rows = executor.query("SELECT kind, count() FROM dead_letters FINAL GROUP BY kind ORDER BY kind")
    return dict(rows)
