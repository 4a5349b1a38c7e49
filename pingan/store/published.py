"""SQL of the published index: the aggregations behind it and the ``published_index`` table.

Written to be read and re-run by analysts (docs/risk-index.md, "The published index"): plain GROUP BYs over
``events`` joined to ``grid_units``, parameters as ``%(name)s``, times as epoch seconds (the range of a
local period, computed by pingan.index.published), nothing an old server lacks (no window functions, no
``WITH name AS (subquery)``). Distinct events are counted with ``uniqExact(event_id)``: ``events`` keeps a
redelivered event twice until its parts merge. Late events count: they are history, only the live index
leaves them out. The unit level picks a ``grid_units`` column from a fixed list (identifiers cannot be
parameters): ``{unit_column}`` below is one of community_id, subdistrict_id, district_id, police_station_id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from pingan.index.levels import UNIT_LEVELS
from pingan.store.client import Executor

if TYPE_CHECKING:
    from pingan.index.published import PublishedUnit

TABLE = "published_index"

# Unit level -> its column in grid_units: the whitelist that stands in for an identifier parameter.
UNIT_COLUMNS = {level: f"{level}_id" for level in UNIT_LEVELS}


def unit_column(unit_level: str) -> str:
    try:
        return UNIT_COLUMNS[unit_level]
    except KeyError:
        raise ValueError(f"unit level {unit_level!r} is not one of {', '.join(UNIT_COLUMNS)}") from None


# Each unit with its residents and its district: the one holding most of its residents (a police station's
# area may cross a district line).
UNITS_SQL = """
SELECT
    unit_id,
    argMax(district_id, residents) AS main_district,
    sum(residents) AS population
FROM
(
    SELECT {unit_column} AS unit_id, district_id, sum(population) AS residents
    FROM grid_units FINAL
    GROUP BY unit_id, district_id
)
GROUP BY unit_id
ORDER BY unit_id
"""

DISTRICTS_SQL = """
SELECT district_id, sum(population) AS residents
FROM grid_units FINAL
GROUP BY district_id
ORDER BY district_id
"""

# Distinct events per unit and (source, type, severity) in [start, end): the incidents of one period.
UNIT_COUNTS_SQL = """
SELECT
    u.unit_id,
    e.source,
    e.type,
    e.severity,
    uniqExact(e.event_id) AS incidents
FROM events AS e
INNER JOIN (SELECT grid_id, {unit_column} AS unit_id FROM grid_units FINAL) AS u USING grid_id
WHERE e.event_time >= toDateTime(%(start)s)
  AND e.event_time < toDateTime(%(end)s)
  AND e.source IN %(sources)s
GROUP BY u.unit_id, e.source, e.type, e.severity
ORDER BY u.unit_id, e.source, e.type, e.severity
"""

# Distinct events per district, local calendar day and (source, type, severity) in [start, end): the
# district-wide history the baselines are averaged from.
DISTRICT_DAILY_SQL = """
SELECT
    u.district_id,
    toDate(e.event_time, %(timezone)s) AS local_day,
    e.source,
    e.type,
    e.severity,
    uniqExact(e.event_id) AS incidents
FROM events AS e
INNER JOIN (SELECT grid_id, district_id FROM grid_units FINAL) AS u USING grid_id
WHERE e.event_time >= toDateTime(%(start)s)
  AND e.event_time < toDateTime(%(end)s)
  AND e.source IN %(sources)s
GROUP BY u.district_id, local_day, e.source, e.type, e.severity
ORDER BY u.district_id, local_day, e.source, e.type, e.severity
"""


def units(executor: Executor, unit_level: str) -> list[tuple[str, str, int]]:
    """(unit id, main district, residents) of every unit of a level that has grids."""
    rows = executor.query(UNITS_SQL.format(unit_column=unit_column(unit_level)))
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def district_populations(executor: Executor) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in executor.query(DISTRICTS_SQL)}


def unit_counts(
    executor: Executor, unit_level: str, sources: Sequence[str], start: int, end: int
) -> dict[str, dict[tuple[str, str, int], int]]:
    """unit id -> {(source, type, severity): distinct events} in [start, end) (epoch seconds)."""
    sql = UNIT_COUNTS_SQL.format(unit_column=unit_column(unit_level))
    counts: dict[str, dict[tuple[str, str, int], int]] = {}
    for unit_id, source, event_type, severity, incidents in executor.query(
        sql, {"start": int(start), "end": int(end), "sources": tuple(sources)}
    ):
        counts.setdefault(unit_id, {})[(source, event_type, int(severity))] = int(incidents)
    return counts


def district_daily_counts(
    executor: Executor, sources: Sequence[str], start: int, end: int, timezone: str
) -> list[tuple[str, date, str, str, int, int]]:
    """(district, local day, source, type, severity, distinct events) in [start, end) (epoch seconds)."""
    params = {"start": int(start), "end": int(end), "sources": tuple(sources), "timezone": timezone}
    rows = executor.query(DISTRICT_DAILY_SQL, params)
    return [(str(d), day, s, t, int(sev), int(n)) for d, day, s, t, sev, n in rows]


# --- the published_index table ------------------------------------------------------------------------

COLUMNS = (
    "period_kind", "period_start", "period_end", "unit_level", "unit_id", "unit_name", "district_id",
    "population", "incidents", "weighted", "per_10k", "baseline_per_10k", "ratio", "score", "level", "rank",
    "ranked_units", "dominant_type", "previous_score", "previous_rank", "previous_incidents", "change",
    "rank_change", "flagged", "previously_flagged", "flag_change", "config_version", "timezone", "computed_at",
)  # fmt: skip


def row(unit: PublishedUnit, *, computed_at: datetime) -> tuple[Any, ...]:
    now, before = unit.current, unit.previous
    return (
        unit.period.kind, unit.period.start, unit.period.end, unit.unit_level, now.unit.unit_id, now.unit.name,
        now.unit.district_id, now.unit.population, now.incidents, now.weighted, now.per_10k, now.baseline_per_10k,
        now.ratio, now.score, now.level, unit.rank, unit.ranked_units, now.dominant_type, before.score,
        unit.previous_rank, before.incidents, unit.change, unit.rank_change, int(unit.flagged),
        int(unit.previously_flagged), unit.flag_change, unit.config_version, unit.timezone,
        int(computed_at.timestamp()),
    )  # fmt: skip


def insert(executor: Executor, units: Iterable[PublishedUnit], *, computed_at: datetime) -> int:
    rows = [row(unit, computed_at=computed_at) for unit in units]
    executor.insert(TABLE, COLUMNS, rows)
    return len(rows)


READ_COLUMNS = COLUMNS[:-1]

# One published period of one unit level, safest first (rank 1). Add `AND flagged = 1` for the hat list.
READ_SQL = """
SELECT
    period_kind, period_start, period_end, unit_level, unit_id, unit_name, district_id, population, incidents,
    weighted, per_10k, baseline_per_10k, ratio, score, level, rank, ranked_units, dominant_type, previous_score,
    previous_rank, previous_incidents, change, rank_change, flagged, previously_flagged, flag_change,
    config_version, timezone
FROM published_index FINAL
WHERE period_kind = %(period_kind)s
  AND unit_level = %(unit_level)s
  AND period_start = %(period_start)s
ORDER BY rank, unit_id
"""

LATEST_PERIOD_SQL = """
SELECT max(period_start) AS newest, count() AS published_rows
FROM published_index
WHERE period_kind = %(period_kind)s AND unit_level = %(unit_level)s
"""


def read(executor: Executor, period_kind: str, unit_level: str, period_start: date) -> list[dict[str, Any]]:
    params = {"period_kind": period_kind, "unit_level": unit_level, "period_start": period_start}
    return [dict(zip(READ_COLUMNS, r, strict=True)) for r in executor.query(READ_SQL, params)]


def latest_period_start(executor: Executor, period_kind: str, unit_level: str) -> date | None:
    """The start of the newest published period of a kind and level, or None when none is published."""
    params = {"period_kind": period_kind, "unit_level": unit_level}
    newest, published_rows = executor.query(LATEST_PERIOD_SQL, params)[0]
    return newest if published_rows else None
