"""SQL of ``baselines``, ``baseline_cells`` and ``baseline_grids``: learned snapshots of what is normal per
grid (streams/baseline.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pingan.store.client import Executor
from streams.baseline import HOURS_PER_WEEK, LearnedBaseline

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
    """Rows ``(grid, source, type, severity, hour_of_week, events)`` for streams.baseline.learn."""
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


def load_grid(executor: Executor, version: str, grid_id: str) -> LearnedBaseline | None:
    """What the baseline model needs for one grid: its own cells and the district's hour-of-week totals."""
    summary = _summary(executor, version)
    if not summary:
        return None
    params = {"version": version, "grid_id": grid_id}
    own = executor.query(
        """
        SELECT source, hour_of_week, weighted
        FROM baseline_cells FINAL
        WHERE version = %(version)s AND grid_id = %(grid_id)s
        ORDER BY source, hour_of_week
        """,
        params,
    )
    district = executor.query(
        """
        SELECT source, hour_of_week, sum(weighted)
        FROM baseline_cells FINAL
        WHERE version = %(version)s
        GROUP BY source, hour_of_week
        ORDER BY source, hour_of_week
        """,
        params,
    )
    cells: dict[tuple[str, str], dict[int, float]] = {}
    for source, how, weighted in own:
        cells.setdefault((grid_id, str(source)), {})[int(how)] = float(weighted)
    totals: dict[str, list[float]] = {}
    for source, how, weighted in district:
        totals.setdefault(str(source), [0.0] * HOURS_PER_WEEK)[int(how)] = float(weighted)
    observed = executor.query(
        "SELECT grid_id FROM baseline_grids FINAL WHERE version = %(version)s AND grid_id = %(grid_id)s", params
    )
    weeks = float(summary[0][1])
    units = {str(source): float(unit) for source, _, unit in summary}
    return LearnedBaseline(version, weeks, cells, units, totals, frozenset(str(g) for (g,) in observed))


def _summary(executor: Executor, version: str) -> list[tuple[Any, ...]]:
    return executor.query(
        "SELECT source, weeks, unit_weight FROM baselines FINAL WHERE version = %(version)s ORDER BY source",
        {"version": version},
    )


def load(executor: Executor, version: str) -> LearnedBaseline | None:
    """One snapshot, or None if there is no such version."""
    summary = _summary(executor, version)
    if not summary:
        return None
    cells: dict[tuple[str, str], dict[int, float]] = {}
    rows: list[tuple[Any, ...]] = executor.query(
        """
        SELECT grid_id, source, hour_of_week, weighted
        FROM baseline_cells FINAL
        WHERE version = %(version)s
        """,
        {"version": version},
    )
    for grid_id, source, how, weighted in rows:
        cells.setdefault((grid_id, source), {})[int(how)] = float(weighted)
    grids = executor.query(
        "SELECT grid_id FROM baseline_grids FINAL WHERE version = %(version)s ORDER BY grid_id", {"version": version}
    )
    weeks = float(summary[0][1])
    units = {str(source): float(unit) for source, _, unit in summary}
    return LearnedBaseline(version, weeks, cells, units, grids=frozenset(str(g) for (g,) in grids))
