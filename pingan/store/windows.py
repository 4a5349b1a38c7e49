"""SQL of the ``grid_windows`` table: one row per grid and tumbling window, the grid history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pingan.store.client import Executor, Rejected, insert_isolating

if TYPE_CHECKING:
    from pingan.index.scoring import Assessment, IndexConfig

TABLE = "grid_windows"
COLUMNS = (
    "grid_id", "window_start", "window_seconds", "events", "weighted", "sources", "source_counts", "types",
    "type_counts", "score", "level", "config_version", "version",
)  # fmt: skip


@dataclass(frozen=True)
class WindowRow:
    grid_id: str
    window_start: datetime
    window_seconds: int
    events: int
    weighted: float
    source_counts: Mapping[str, int]
    type_counts: Mapping[str, int]  # keyed "source/type"
    score: float
    level: str
    config_version: str
    version: int

    @classmethod
    def build(
        cls,
        grid_id: str,
        start: int,
        window_seconds: int,
        counts: Mapping[tuple[str, str, int], int],
        assessment: Assessment,
        index: IndexConfig,
        version: int,
    ) -> WindowRow:
        sources: dict[str, int] = {}
        types: dict[str, int] = {}
        weighted = 0.0
        for (source, event_type, severity), n in counts.items():
            sources[source] = sources.get(source, 0) + n
            types[f"{source}/{event_type}"] = types.get(f"{source}/{event_type}", 0) + n
            weighted += n * index.event_weight(source, event_type, severity)
        return cls(
            grid_id, datetime.fromtimestamp(start, UTC), window_seconds, sum(sources.values()), round(weighted, 3),
            sources, types, assessment.score, assessment.level.value, index.version, version,
        )  # fmt: skip

    def as_row(self) -> tuple[Any, ...]:
        sources = sorted(self.source_counts)
        types = sorted(self.type_counts)
        return (
            self.grid_id, int(self.window_start.timestamp()), self.window_seconds, self.events, self.weighted, sources,
            [self.source_counts[s] for s in sources], types, [self.type_counts[t] for t in types], self.score,
            self.level, self.config_version, self.version,
        )  # fmt: skip


def insert(executor: Executor, rows: Sequence[WindowRow]) -> Rejected:
    """Insert window rows; returns those ClickHouse refused, the others stored."""
    return insert_isolating(executor, TABLE, COLUMNS, rows, WindowRow.as_row)


# The level of a step is its worst window; the ranking expression keeps that portable across versions.
HISTORY_SQL = """
SELECT
    toDateTime(intDiv(toUInt32(window_start), %(step)s) * %(step)s, 'UTC') AS step_start,
    sum(events) AS events,
    max(score) AS max_score,
    multiIf(max(level_rank) = 3, 'red', max(level_rank) = 2, 'orange', max(level_rank) = 1, 'yellow', 'green')
        AS level,
    count() AS windows
FROM
(
    SELECT
        window_start, events, score,
        multiIf(level = 'red', 3, level = 'orange', 2, level = 'yellow', 1, 0) AS level_rank
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
