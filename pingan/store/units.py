"""SQL of the ``unit_risk`` table: snapshots of the roll-ups (pingan.index.rollup), one row per unit and instant."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pingan.index.levels import LEVELS
from pingan.index.rollup import UnitRisk
from pingan.store.client import Executor

TABLE = "unit_risk"
COLUMNS = (
    "unit_level", "unit_id", "as_of", "name", "level", "weighted_score", "worst_score", "grids", "population",
    "grids_green", "grids_yellow", "grids_orange", "grids_red", "top_grids", "top_scores", "top_levels",
    "computed_at",
)  # fmt: skip


def row(unit: UnitRisk, *, as_of: datetime, computed_at: datetime) -> tuple[Any, ...]:
    # Epoch seconds for DateTime columns, as elsewhere in the store: no time-zone conversion by the driver.
    return (
        unit.unit_level, unit.unit_id, int(as_of.timestamp()), unit.name, unit.level, unit.weighted_score,
        unit.worst_score, unit.grids, unit.population, *(unit.levels.get(level, 0) for level in LEVELS),
        [t.grid_id for t in unit.top_grids],
        [t.score for t in unit.top_grids], [t.level for t in unit.top_grids], int(computed_at.timestamp()),
    )  # fmt: skip


def insert(executor: Executor, units: Iterable[UnitRisk], *, as_of: datetime, computed_at: datetime) -> int:
    """Store one snapshot of roll-ups taken at ``as_of``; returns the rows written."""
    rows = [row(unit, as_of=as_of, computed_at=computed_at) for unit in units]
    executor.insert(TABLE, COLUMNS, rows)
    return len(rows)


_READ_COLUMNS = (
    "unit_level", "unit_id", "as_of", "name", "level", "weighted_score", "worst_score", "grids", "population",
    "grids_green", "grids_yellow", "grids_orange", "grids_red", "top_grids", "top_scores", "top_levels",
)  # fmt: skip

SNAPSHOT_SQL = """
SELECT
    unit_level, unit_id, as_of, name, level, weighted_score, worst_score, grids, population,
    grids_green, grids_yellow, grids_orange, grids_red, top_grids, top_scores, top_levels
FROM unit_risk FINAL
WHERE unit_level = %(unit_level)s
  AND as_of = (SELECT max(as_of) FROM unit_risk WHERE unit_level = %(unit_level)s)
ORDER BY unit_id
"""

HISTORY_SQL = """
SELECT
    unit_level, unit_id, as_of, name, level, weighted_score, worst_score, grids, population,
    grids_green, grids_yellow, grids_orange, grids_red, top_grids, top_scores, top_levels
FROM unit_risk FINAL
WHERE unit_level = %(unit_level)s
  AND unit_id = %(unit_id)s
  AND as_of >= toDateTime(%(start)s)
  AND as_of < toDateTime(%(end)s)
ORDER BY as_of
"""


def latest_snapshot(executor: Executor, unit_level: str) -> list[dict[str, Any]]:
    """The most recent stored snapshot of one level, by unit id."""
    rows = executor.query(SNAPSHOT_SQL, {"unit_level": unit_level})
    return [dict(zip(_READ_COLUMNS, r, strict=True)) for r in rows]


def history(executor: Executor, unit_level: str, unit_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Snapshots of one unit in [start, end), oldest first."""
    params = {
        "unit_level": unit_level,
        "unit_id": unit_id,
        "start": int(start.timestamp()),
        "end": int(end.timestamp()),
    }
    rows = executor.query(HISTORY_SQL, params)
    return [dict(zip(_READ_COLUMNS, r, strict=True)) for r in rows]
