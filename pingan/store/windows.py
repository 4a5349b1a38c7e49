"""SQL of the ``grid_windows`` table: one row per grid and tumbling window, the grid history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pingan.index.levels import Level
from pingan.index.records import WindowRow
from pingan.store.client import Executor, Rejected, insert_isolating

TABLE = "grid_windows"
COLUMNS = (
    "grid_id", "window_start", "window_seconds", "events", "weighted", "sources", "source_counts", "types",
    "type_counts", "score", "level", "config_version", "version",
)  # fmt: skip


def row(window: WindowRow) -> tuple[Any, ...]:
    """The record as a row of the table, in COLUMNS' order."""
    sources = sorted(window.source_counts)
    types = sorted(window.type_counts)
    return (
        window.grid_id, int(window.window_start.timestamp()), window.window_seconds, window.events,
        window.weighted, sources, [window.source_counts[s] for s in sources], types,
        [window.type_counts[t] for t in types], window.score, window.level, window.config_version, window.version,
    )  # fmt: skip


def insert(executor: Executor, rows: Sequence[WindowRow]) -> Rejected:
    """Insert window rows; returns those ClickHouse refused, the others stored."""
    return insert_isolating(executor, TABLE, COLUMNS, rows, row)


# The level of a step is its worst window; ranking the levels keeps that portable across versions. Both
# expressions are written from Level, so a colour added there is ranked here too.
_WORST_FIRST = sorted((level for level in Level if level.rank > 0), key=lambda level: -level.rank)
LEVEL_RANK_SQL = "multiIf(" + ", ".join(f"level = '{level}', {level.rank}" for level in _WORST_FIRST) + ", 0)"
LEVEL_OF_RANK_SQL = (
    "multiIf("
    + ", ".join(f"max(level_rank) = {level.rank}, '{level}'" for level in _WORST_FIRST)
    + f", '{Level.GREEN}')"
)

HISTORY_SQL = f"""
SELECT
    toDateTime(intDiv(toUInt32(window_start), %(step)s) * %(step)s, 'UTC') AS step_start,
    sum(events) AS events,
    max(score) AS max_score,
    {LEVEL_OF_RANK_SQL}
        AS level,
    count() AS windows
FROM
(
    SELECT
        window_start, events, score,
        {LEVEL_RANK_SQL} AS level_rank
    FROM grid_windows FINAL
    WHERE grid_id = %(grid_id)s
      AND window_start >= toDateTime(%(start)s)
      AND window_start < toDateTime(%(end)s)
)
GROUP BY step_start
ORDER BY step_start
"""


def history(executor: Executor, grid_id: str, start: datetime, end: datetime, step_seconds: int) -> list[dict]:
    """Windows of one grid in [start, end), grouped into steps of ``step_seconds``."""
    # Epoch seconds, not datetimes: the driver would render a datetime in the server's time zone, and a
    # string compared with a DateTime('UTC') column is read as UTC.
    params = {
        "grid_id": grid_id,
        "start": int(start.timestamp()),
        "end": int(end.timestamp()),
        "step": int(step_seconds),
    }
    rows = executor.query(HISTORY_SQL, params)
    keys = ("start", "events", "max_score", "level", "windows")
    return [dict(zip(keys, r, strict=True)) for r in rows]
