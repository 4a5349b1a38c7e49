"""SQL of ``baselines``, ``baseline_cells`` and ``baseline_grids``: learned snapshots of what is normal per
grid (pingan/index/baseline.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from pingan.index.baseline import HOURS_PER_WEEK, LearnedBaseline
from pingan.store.client import Executor

# Events of [start, end) per grid, source, type, severity and hour of the week (0 = Monday 00:00 UTC; the
# epoch began on a Thursday, hour 72 of its week). FINAL: a redelivered event is one event.
HISTORY_SQL = """
SELECT
    grid_id,
    source,
    type,
    severity,
    toUInt8(modulo(intDiv(toUInt32(event_time), 3600) + 72, 168)) AS hour_of_week,
    count() AS events
FROM events FINAL
WHERE event_time >= toDateTime(%(start)s) AND event_time < toDateTime(%(end)s) AND grid_id != ''
GROUP BY grid_id, source, type, severity, hour_of_week
"""

_SNAPSHOT_COLUMNS = (
    "version", "learned_at", "history_from", "history_to", "weeks", "config_version", "source", "unit_weight",
    "weighted", "events",
)  # fmt: skip
_CELL_COLUMNS = ("version", "grid_id", "source", "hour_of_week", "weighted")


@dataclass(frozen=True)
class SnapshotInfo:
    version: str
    learned_at: datetime
    history_from: datetime
    history_to: datetime
    config_version: str
    events: int


def history(executor: Executor, start: datetime, end: datetime) -> Iterator[tuple[str, str, str, int, int, int]]:
    """Rows ``(grid, source, type, severity, hour_of_week, events)`` for pingan.index.baseline.learn."""
    params = {"start": int(start.timestamp()), "end": int(end.timestamp())}
    for grid_id, source, event_type, severity, how, events in executor.query(HISTORY_SQL, params):
        yield str(grid_id), str(source), str(event_type), int(severity), int(how), int(events)


def insert(
    executor: Executor,
    learned: LearnedBaseline,
    *,
    learned_at: datetime,
    history_from: datetime,
    history_to: datetime,
    config_version: str,
    events_by_source: dict[str, int],
) -> None:
    """Store a snapshot: the cells first, then its summary rows, which are what makes it visible."""
    cells = [
        (learned.version, grid_id, source, how, weighted)
        for (grid_id, source), by_hour in sorted(learned.cells.items())
        for how, weighted in sorted(by_hour.items())
    ]
    executor.insert("baseline_cells", _CELL_COLUMNS, cells)
    executor.insert("baseline_grids", ("version", "grid_id"), [(learned.version, g) for g in sorted(learned.grids)])
    weighted: dict[str, float] = {}
    for (_, source), by_hour in learned.cells.items():
        weighted[source] = weighted.get(source, 0.0) + sum(by_hour.values())
    summary = [
        (learned.version, int(learned_at.timestamp()), int(history_from.timestamp()), int(history_to.timestamp()),
         learned.weeks, config_version, source, learned.unit_weights.get(source, 1.0), weighted.get(source, 0.0),
         events_by_source.get(source, 0))
        for source in sorted(set(weighted) | set(events_by_source))
    ]  # fmt: skip
    executor.insert("baselines", _SNAPSHOT_COLUMNS, summary)


def snapshots(executor: Executor, *, limit: int) -> list[SnapshotInfo]:
    """Stored snapshots, newest first."""
    rows = executor.query(
        """
        SELECT version, max(learned_at), min(history_from), max(history_to), any(config_version), sum(events)
        FROM baselines FINAL
        GROUP BY version
        ORDER BY max(learned_at) DESC, version DESC
        LIMIT %(limit)s
        """,
        {"limit": int(limit)},
    )
    return [SnapshotInfo(*row) for row in rows]


def newest(executor: Executor) -> SnapshotInfo | None:
    found = snapshots(executor, limit=1)
    return found[0] if found else None


# One grid ('' = every grid) of one snapshot: its cells, and whether it was in the registry when learned.
_CELLS_SQL = """
SELECT grid_id, source, hour_of_week, weighted
FROM baseline_cells FINAL
WHERE version = %(version)s AND (%(grid_id)s = '' OR grid_id = %(grid_id)s)
ORDER BY grid_id, source, hour_of_week
"""
_GRIDS_SQL = """
SELECT grid_id
FROM baseline_grids FINAL
WHERE version = %(version)s AND (%(grid_id)s = '' OR grid_id = %(grid_id)s)
ORDER BY grid_id
"""
# The district's weighted count per source and hour of the week (the profile), summed over every grid.
_DISTRICT_SQL = """
SELECT source, hour_of_week, sum(weighted)
FROM baseline_cells FINAL
WHERE version = %(version)s
GROUP BY source, hour_of_week
ORDER BY source, hour_of_week
"""


def load(executor: Executor, version: str) -> LearnedBaseline | None:
    """One snapshot, or None if there is no such version."""
    return _read(executor, version, "")


def load_grid(executor: Executor, version: str, grid_id: str) -> LearnedBaseline | None:
    """What the baseline model needs for one grid: its own cells and the district's hour-of-week totals."""
    return _read(executor, version, grid_id)


def _read(executor: Executor, version: str, grid_id: str) -> LearnedBaseline | None:
    summary = executor.query(
        "SELECT source, weeks, unit_weight FROM baselines FINAL WHERE version = %(version)s ORDER BY source",
        {"version": version},
    )
    if not summary:
        return None
    params = {"version": version, "grid_id": grid_id}
    cells: dict[tuple[str, str], dict[int, float]] = {}
    for grid, source, how, weighted in executor.query(_CELLS_SQL, params):
        cells.setdefault((str(grid), str(source)), {})[int(how)] = float(weighted)
    grids = frozenset(str(grid) for (grid,) in executor.query(_GRIDS_SQL, params))
    totals: dict[str, list[float]] | None = None
    if grid_id:  # a slice: the profile cannot be summed from the cells read
        totals = {}
        for source, how, weighted in executor.query(_DISTRICT_SQL, params):
            totals.setdefault(str(source), [0.0] * HOURS_PER_WEEK)[int(how)] = float(weighted)
    units = {str(source): float(unit) for source, _, unit in summary}
    return LearnedBaseline(version, float(summary[0][1]), cells, units, totals, grids)
