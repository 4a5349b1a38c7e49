"""SQL of the ``dead_letters`` table: one row per record that could not become an event, from any way in.

The row is :class:`pingan.dead_letter.DeadLetter` (re-exported here as the worker has always imported it).
The key is the origin (``topic``, ``kafka_partition``, ``kafka_offset``; see ``pingan/dead_letter.py``), so
a dead letter written twice is stored once. A replay marks a row by inserting it again with
``replayed_at`` set and a later ``ingested_at`` (the table's version).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pingan.dead_letter import DeadLetter
from pingan.store.client import Executor, Rejected, insert_isolating

__all__ = [
    "COLUMNS",
    "DeadLetter",
    "StoredDeadLetter",
    "count_by_feed_and_kind",
    "count_by_kind",
    "existing_origins",
    "find",
    "insert",
    "mark_replayed",
    "recent",
    "row",
]

TABLE: Final = "dead_letters"
COLUMNS: Final = (
    "topic", "kafka_partition", "kafka_offset", "received_at", "kind", "field", "reason", "raw", "ingested_at",
    "source", "feed", "adapter", "origin", "raw_size", "raw_sha256", "redacted", "replayed_at", "replayed_as",
)  # fmt: skip
_SELECTED: Final = ", ".join(c for c in COLUMNS)
_EPOCH: Final = datetime.fromtimestamp(0, UTC)


def row(
    letter: DeadLetter, *, ingested_at: datetime, replayed_at: datetime | None = None, replayed_as: str = ""
) -> tuple[Any, ...]:
    received_at = letter.storable_received_at(ingested_at)
    return (
        letter.topic, letter.partition, letter.offset, int(received_at.timestamp()), letter.kind,
        letter.field, letter.reason, letter.raw.decode("utf-8", errors="replace"), int(ingested_at.timestamp()),
        letter.source, letter.feed, letter.adapter, letter.origin, letter.raw_size, letter.raw_sha256,
        int(letter.redacted), int(replayed_at.timestamp()) if replayed_at else 0, replayed_as,
    )  # fmt: skip


def insert(executor: Executor, rows: Sequence[tuple[Any, ...]]) -> Rejected:
    """Insert dead-letter rows (see :func:`row`); returns the rows ClickHouse refused, the others stored."""
    return insert_isolating(executor, TABLE, COLUMNS, rows, lambda r: r)


class StoredDeadLetter(dict[str, Any]):
    """One row as the readers return it: a dict (for the API's JSON) that can rebuild its DeadLetter."""

    def letter(self) -> DeadLetter:
        return DeadLetter(
            self["topic"], self["partition"], self["offset"], self["received_at"], self["kind"], self["field"],
            self["reason"], self["raw"].encode(), source=self["source"], feed=self["feed"], adapter=self["adapter"],
            raw_size=self["raw_size"], raw_sha256=self["raw_sha256"], redacted=self["redacted"],
        )  # fmt: skip


_KEYS: Final = (
    "topic", "partition", "offset", "received_at", "kind", "field", "reason", "raw", "ingested_at", "source",
    "feed", "adapter", "origin", "raw_size", "raw_sha256", "redacted", "replayed_at", "replayed_as",
)  # fmt: skip


def _utc(value: Any) -> Any:
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def _stored(values: Sequence[Any]) -> StoredDeadLetter:
    stored = StoredDeadLetter(zip(_KEYS, values, strict=True))
    for key in ("received_at", "ingested_at", "replayed_at"):
        stored[key] = _utc(stored[key])
    stored["redacted"] = bool(stored["redacted"])
    stored["replayed_at"] = None if stored["replayed_at"] == _EPOCH else stored["replayed_at"]
    if not stored["origin"]:  # rows written before migration 0009
        stored["origin"] = stored.letter().origin
    return stored


def recent(
    executor: Executor,
    *,
    limit: int = 100,
    source: str | None = None,
    feed: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    replayed: bool | None = None,
) -> list[StoredDeadLetter]:
    """Most recent first, filtered by way in, feed, kind, received time [since, until) and replay state."""
    conditions, params = [], {"limit": limit}
    for name, value in (("source", source), ("feed", feed), ("kind", kind)):
        if value is not None:
            conditions.append(f"{name} = %({name})s")
            params[name] = value
    if since is not None:
        conditions.append("received_at >= toDateTime(%(since)s, 'UTC')")
        params["since"] = int(since.timestamp())
    if until is not None:
        conditions.append("received_at < toDateTime(%(until)s, 'UTC')")
        params["until"] = int(until.timestamp())
    if replayed is not None:
        conditions.append("replayed_at " + ("!=" if replayed else "=") + " toDateTime(0)")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = executor.query(
        f"""
        SELECT {_SELECTED}
        FROM dead_letters FINAL
        {where}
        ORDER BY received_at DESC, topic, kafka_partition, kafka_offset DESC
        LIMIT %(limit)s
        """,
        params,
    )
    return [_stored(r) for r in rows]


def find(executor: Executor, topic: str, partition: int, offset: int) -> StoredDeadLetter | None:
    """The row of one origin, or None."""
    rows = executor.query(
        f"""
        SELECT {_SELECTED}
        FROM dead_letters FINAL
        WHERE topic = %(topic)s AND kafka_partition = %(partition)s AND kafka_offset = %(offset)s
        """,
        {"topic": topic, "partition": partition, "offset": offset},
    )
    return _stored(rows[0]) if rows else None


def existing_origins(executor: Executor, letters: Sequence[DeadLetter]) -> set[tuple[str, int, int]]:
    """Which of these origins already have a row (the sink stores each once and keeps replay marks)."""
    if not letters:
        return set()
    topics = sorted({letter.topic for letter in letters})
    rows = executor.query(
        "SELECT DISTINCT topic, kafka_partition, kafka_offset FROM dead_letters WHERE topic IN %(topics)s "
        "AND kafka_offset >= %(low)s AND kafka_offset <= %(high)s",
        {
            "topics": tuple(topics),  # a tuple: clickhouse-driver writes a list as an array, which 18.16 refuses in IN
            "low": min(letter.offset for letter in letters),
            "high": max(letter.offset for letter in letters),
        },
    )
    return {(topic, int(partition), int(offset)) for topic, partition, offset in rows}


def mark_replayed(executor: Executor, stored: StoredDeadLetter, *, at: datetime, event_id: str) -> None:
    """Record that ``stored`` was sent on as ``event_id``: the same row again with a later version.

    The version (``ingested_at``, in seconds) must be larger than the row's, or FINAL could keep either.
    """
    version = max(at, stored["ingested_at"] + timedelta(seconds=1))
    insert(executor, [row(stored.letter(), ingested_at=version, replayed_at=at, replayed_as=event_id)])


def count_by_kind(executor: Executor) -> dict[str, int]:
    rows = executor.query("SELECT kind, count() FROM dead_letters FINAL GROUP BY kind ORDER BY kind")
    return dict(rows)


def count_by_feed_and_kind(executor: Executor) -> list[tuple[str, str, int, datetime]]:
    """(feed, kind, count, last received) for every pair; feed '' where it is not known."""
    rows = executor.query(
        "SELECT feed, kind, count(), max(received_at) FROM dead_letters FINAL GROUP BY feed, kind ORDER BY feed, kind"
    )
    return [(feed, kind, int(count), _utc(last)) for feed, kind, count, last in rows]
