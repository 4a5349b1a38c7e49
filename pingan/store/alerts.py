"""SQL of the ``alerts`` table: escalations to orange or red, and steps down from them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from pingan.index.alerts import Alert, alert_document, decode_cursor
from pingan.store.client import Executor, Rejected, insert_isolating

COLUMNS = (
    "alert_id", "grid_id", "kind", "level", "previous_level", "score", "as_of", "version", "explanation",
    "config_version",
)  # fmt: skip


def row(alert: Alert) -> tuple[Any, ...]:
    """The alert as a row of the table, in COLUMNS' order."""
    return (
        alert.alert_id, alert.grid_id, alert.kind, alert.level, alert.previous_level, alert.score,
        int(alert.as_of.timestamp()), alert.version, orjson.dumps(alert.explanation).decode(), alert.config_version,
    )  # fmt: skip


def insert(executor: Executor, alerts: Sequence[Alert]) -> Rejected:
    """Insert alerts; returns those ClickHouse refused, the others stored."""
    return insert_isolating(executor, "alerts", COLUMNS, alerts, row)


def _document(row: tuple[Any, ...]) -> dict[str, Any]:
    alert_id, grid_id, kind, level, previous, score, as_of, version, explanation, config_version = row
    return alert_document(
        alert_id, grid_id, kind, level, previous, score, as_of, version,
        orjson.loads(explanation) if explanation else None, config_version,
    )  # fmt: skip


def after(executor: Executor, cursor: str | None, *, limit: int = 100) -> list[dict[str, Any]]:
    """Alerts after ``cursor`` (all from the start without one), oldest first; each carries its own cursor."""
    version, grid_id = decode_cursor(cursor) if cursor else (0, "")
    rows = executor.query(
        """
        SELECT alert_id, grid_id, kind, level, previous_level, score, as_of, version, explanation, config_version
        FROM alerts FINAL
        WHERE version > %(version)s OR (version = %(version)s AND grid_id > %(grid_id)s)
        ORDER BY version, grid_id
        LIMIT %(limit)s
        """,
        {"version": version, "grid_id": grid_id, "limit": int(limit)},
    )
    return [_document(row) for row in rows]


def newest(executor: Executor, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` newest alerts (the end of ``after``'s order), oldest first."""
    rows = executor.query(
        """
        SELECT alert_id, grid_id, kind, level, previous_level, score, as_of, version, explanation, config_version
        FROM alerts FINAL
        ORDER BY version DESC, grid_id DESC
        LIMIT %(limit)s
        """,
        {"limit": int(limit)},
    )
    return [_document(row) for row in reversed(rows)]


def count_by_level(executor: Executor) -> dict[tuple[str, str], int]:
    """Stored alerts per (level, kind), each alert once."""
    rows = executor.query(
        "SELECT level, kind, uniqExact(alert_id) FROM alerts GROUP BY level, kind ORDER BY level, kind"
    )
    return {(level, kind): int(n) for level, kind, n in rows}


# --- incidents (pingan/incidents.py) ---------------------------------------------------------------------

_ESCALATIONS = "kind = 'escalation' AND level IN ('orange', 'red')"


def escalation_facts(executor: Executor, from_version: int = 0) -> list[tuple[str, str, str, int, datetime]]:
    """(alert_id, grid_id, level, version, as_of) of every escalation to orange or red from ``from_version``
    on: what opens incidents. Each alert once (the table's key is (version, grid_id))."""
    rows = executor.query(
        f"""
        SELECT alert_id, grid_id, level, version, as_of FROM alerts FINAL
        WHERE {_ESCALATIONS} AND version >= %(from_version)s
        ORDER BY version, grid_id
        """,
        {"from_version": int(from_version)},
    )
    return [(alert_id, grid_id, level, int(v), _utc(as_of)) for alert_id, grid_id, level, v, as_of in rows]


def escalations_before(executor: Executor, version: int) -> int:
    """How many escalations to orange or red have a version below ``version`` (each alert once)."""
    [(count,)] = executor.query(
        f"SELECT uniqExact(version, grid_id) FROM alerts WHERE {_ESCALATIONS} AND version < %(version)s",
        {"version": int(version)},
    )
    return int(count)


def stored_ids(executor: Executor, kind: str) -> set[str]:
    """The alert ids of one kind already stored (e.g. the unacknowledged-incident alerts written so far)."""
    rows = executor.query("SELECT DISTINCT alert_id FROM alerts WHERE kind = %(kind)s", {"kind": kind})
    return {alert_id for (alert_id,) in rows}


def by_id(executor: Executor, alert_id: str) -> dict[str, Any] | None:
    """One alert as the feed shows it, or None."""
    rows = executor.query(
        """
        SELECT alert_id, grid_id, kind, level, previous_level, score, as_of, version, explanation, config_version
        FROM alerts FINAL WHERE alert_id = %(alert_id)s LIMIT 1
        """,
        {"alert_id": alert_id},
    )
    return _document(rows[0]) if rows else None


def _utc(value: datetime | int) -> datetime:
    if isinstance(value, int):
        return datetime.fromtimestamp(value, UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
