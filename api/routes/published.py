"""The published public-safety index (平安指数): rankings and the flagged ("hat") list, as published by
``pingan publish`` into ``published_index``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from pingan.api.access import Caller, ReaderDep
from pingan.api.deps import ExecutorDep, Resources, ResourcesDep
from pingan.api.errors import not_found
from pingan.api.index_models import FlaggedResponse, IndexResponse
from pingan.api.models import ErrorBody
from pingan.api.params import storable_day
from pingan.api.responses import OrjsonResponse
from pingan.api.scopes import units_touching
from pingan.incidents import handling_figures
from pingan.index.levels import UnitLevel
from pingan.index.published import flagged_lists, period_containing
from pingan.store import published
from pingan.store.client import Executor

router = APIRouter(prefix="/v1/index", tags=["published index"])

PeriodParam = Annotated[Literal["day", "week", "month"], Path(description="day, ISO week (Monday first) or month")]
UnitParam = Annotated[
    UnitLevel,
    Query(description="unit level; the shipped config publishes community and police_station"),
]
DateParam = Annotated[
    date | None,
    Query(alias="date", description="any local day in the period (YYYY-MM-DD); default: the newest published one"),
]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no index published for that period and unit level"},
    422: {"model": ErrorBody, "description": "invalid parameter"},
    503: {"model": ErrorBody, "description": "ClickHouse unavailable"},
}

# Columns that describe the period, not the unit: lifted to the top of the body.
_PERIOD_FIELDS = ("period_kind", "period_start", "period_end", "unit_level", "timezone", "config_version")


def _unit_item(row: Mapping[str, Any]) -> dict[str, Any]:
    item = {key: value for key, value in row.items() if key not in _PERIOD_FIELDS}
    item["flagged"] = bool(row["flagged"])
    item["previously_flagged"] = bool(row["previously_flagged"])
    return item


def _published_rows(executor: Executor, period: str, unit: str, day: date | None) -> list[dict[str, Any]]:
    storable_day(day, "date")
    if day is None:
        start = published.latest_period_start(executor, period, unit)
    else:
        start = period_containing(period, day).start
    rows = published.read(executor, period, unit, start) if start is not None else []
    if not rows:
        which = f"the {period} of {day.isoformat()}" if day is not None else f"any {period}"
        hint = f"pingan publish --period {period}" + (f" --date {day.isoformat()}" if day is not None else "")
        raise not_found(f"no {unit} index is published for {which} (run: {hint})", "date" if day else None)
    return rows


def _scoped(resources: Resources, caller: Caller, unit: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the units sharing grids with the caller's scope (all rows for an unscoped key)."""
    scope = resources.scopes.of(caller)
    if scope is None:
        return rows
    touching = units_touching(resources.registry, unit, scope)
    return [row for row in rows if row["unit_id"] in touching]


def _with_handling(resources: Resources, caller: Caller, unit: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each unit's item with its handling figures for the period (incidents opened in it; api/incidents.py)."""
    if not rows:
        return []
    zone = ZoneInfo(rows[0]["timezone"])
    start = datetime.combine(rows[0]["period_start"], time(0), tzinfo=zone)
    end = datetime.combine(rows[0]["period_end"], time(0), tzinfo=zone)
    scope = resources.scopes.of(caller)
    incidents = [i for i in resources.incidents.book()[0].incidents.values() if scope is None or i.grid_id in scope]
    figures = handling_figures(incidents, lambda i: i.scope_units.get(unit), start, end)
    items = []
    for row in rows:
        item = _unit_item(row)
        found = figures.get(row["unit_id"])
        item["handling"] = found.as_dict() if found else None
        items.append(item)
    return items


def _period_header(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in _PERIOD_FIELDS}


@router.get(
    "/{period}",
    summary="The published index of one period: every unit ranked, with the change on the previous period",
    response_model=IndexResponse,
    responses=_RESPONSES,
)
def index_ranking(
    resources: ResourcesDep,
    caller: ReaderDep,
    executor: ExecutorDep,
    period: PeriodParam,
    unit: UnitParam = "community",
    day: DateParam = None,
) -> Response:
    """Score 0-100 (100 = safest), rank 1 = safest, ``change`` = score minus the previous period's
    (docs/risk-index.md, "The published index"). Each unit carries `handling`: its incidents opened in the
    period with the times to acknowledge and resolve (docs/api.md, "Incidents"); null when it had none.
    A scoped key sees the units that share grids with its scope."""
    rows = _published_rows(executor, period, unit, day)
    header = _period_header(rows[0])
    return OrjsonResponse(
        {**header, "units": _with_handling(resources, caller, unit, _scoped(resources, caller, unit, rows))}
    )


@router.get(
    "/{period}/flagged",
    summary="High-incidence units that put on the hat this period, took it off, or still wear it",
    response_model=FlaggedResponse,
    responses=_RESPONSES,
)
def index_flagged(
    resources: ResourcesDep,
    caller: ReaderDep,
    executor: ExecutorDep,
    period: PeriodParam,
    unit: UnitParam = "community",
    day: DateParam = None,
) -> Response:
    rows = _published_rows(executor, period, unit, day)
    lists = {name: [_unit_item(r) for r in _scoped(resources, caller, unit, found)]
             for name, found in flagged_lists(rows).items()}  # fmt: skip
    return OrjsonResponse({**_period_header(rows[0]), **lists})
