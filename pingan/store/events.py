"""SQL of the ``events`` table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pingan.schemas.envelope import Event
from pingan.store.client import Executor, Rejected, insert_isolating

TABLE = "events"
COLUMNS = (
    "event_id", "source", "type", "severity", "event_time", "event_time_ms", "receive_time", "grid_id",
    "lon", "lat", "device_id", "schema_version", "payload", "late", "kafka_partition", "kafka_offset",
    "ingested_at",
)  # fmt: skip


def row(event: Event, *, partition: int, offset: int, late: bool, ingested_at: datetime) -> tuple[Any, ...]:
    # DateTime columns get epoch seconds: the driver passes ints through, datetimes cost a tz conversion each.
    event_ms = event.event_time_ms
    return (
        event.event_id, event.source, event.type, event.severity, event_ms // 1000, event_ms % 1000,
        int(event.receive_time.timestamp()), event.grid_id or "", event.lon, event.lat, event.device_id,
        event.schema_version, event.payload_json, int(late), partition, offset, int(ingested_at.timestamp()),
    )  # fmt: skip


def insert(executor: Executor, rows: Sequence[tuple[Any, ...]]) -> Rejected:
    """Insert event rows (see :func:`row`); returns the rows ClickHouse refused, the others stored."""
    return insert_isolating(executor, TABLE, COLUMNS, rows, lambda r: r)


def count_distinct(executor: Executor, *, source: str | None = None) -> int:
    """Distinct events stored (duplicates from redelivery do not count)."""
    if source is None:
        return executor.query("SELECT uniqExact(event_id) FROM events")[0][0]
    return executor.query("SELECT uniqExact(event_id) FROM events WHERE source = %(source)s", {"source": source})[0][0]


def count_rows(executor: Executor) -> int:
    """Stored rows before duplicates merge away (>= count_distinct)."""
    return executor.query("SELECT count() FROM events")[0][0]


def count_by_source(executor: Executor) -> list[tuple[str, int, datetime]]:
    """(source, distinct events, last receive time) per source: the per-feed "accepted" counts."""
    rows = executor.query(
        "SELECT source, uniqExact(event_id), max(receive_time) FROM events GROUP BY source ORDER BY source"
    )
    return [
        (source, int(count), last.replace(tzinfo=UTC) if last.tzinfo is None else last) for source, count, last in rows
    ]


def stored_since_by_source(executor: Executor, since: datetime, *, event_time_floor: datetime) -> dict[str, int]:
    """Rows stored (``ingested_at``) since ``since`` per source; ``event_time_floor`` prunes old partitions
    (events stored now have recent event times; late ones older than the floor are not counted)."""
    rows = executor.query(
        """
        SELECT source, count()
        FROM events
        WHERE event_time >= %(floor)s AND ingested_at >= %(since)s
        GROUP BY source
        ORDER BY source
        """,
        {"floor": event_time_floor, "since": since},
    )
    return {source: int(n) for source, n in rows}


def open_window_events(
    executor: Executor, partition: int, *, span_seconds: int, floor: datetime
) -> list[tuple[str, str, str, str, int, int]]:
    """The on-time events of one input partition that windows still open at its newest stored event can read:
    (event_id, grid_id, source, type, severity, event time in ms), each event once, oldest first. What the
    worker replays when a partition's window state was lost (pingan.streams.rebuild). ``floor`` bounds the search for
    the newest event (ClickHouse prunes the days before it); ``span_seconds`` reaches back from it, past the floor
    if need be (the state keeps what its windows read, however far that is)."""
    params = {"partition": partition, "floor": floor}
    newest = executor.query(
        "SELECT toUInt32(max(event_time)) FROM events "
        "WHERE event_time >= %(floor)s AND kafka_partition = %(partition)s AND late = 0",
        params,
    )[0][0]
    if not newest:
        return []
    rows = executor.query(
        """
        SELECT event_id, grid_id, source, type, severity, toUInt64(toUInt32(event_time)) * 1000 + event_time_ms AS ms
        FROM events
        WHERE event_time >= toDateTime(%(since)s) AND kafka_partition = %(partition)s AND late = 0
        ORDER BY ms, event_id
        LIMIT 1 BY event_id
        """,
        {**params, "since": int(newest) - span_seconds},
    )
    return [(event_id, grid_id, source, kind, int(severity), int(ms)) for event_id, grid_id, source, kind, severity, ms
            in rows]  # fmt: skip
