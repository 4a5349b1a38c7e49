"""Roll-ups: the risk of communities, subdistricts, districts and police stations, live from the grid map."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.responses import Response

from pingan.api.access import ReaderDep
from pingan.api.deps import ResourcesDep
from pingan.api.errors import ApiError, not_found
from pingan.api.index_models import UnitRiskDetail, UnitsRiskResponse
from pingan.api.models import ErrorBody
from pingan.api.responses import OrjsonResponse, dumps
from pingan.api.routes.risk import current_risk
from pingan.api.scopes import roll_up_in_scope, units_touching
from pingan.index.levels import LEVELS, UnitLevel
from pingan.index.rollup import members, roll_up, roll_up_unit, scores_from_rows

router = APIRouter(prefix="/v1/units", tags=["units"])

UnitLevelParam = Annotated[
    UnitLevel,
    Path(description="community, subdistrict, district or police_station"),
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "invalid parameter"},
    503: {"model": ErrorBody, "description": "ClickHouse unavailable"},
}


@router.get(
    "/{level}/risk",
    summary="Current risk of every unit of a level, rolled up from its grids",
    response_model=UnitsRiskResponse,
    responses=_ERRORS,
)
def units_risk(resources: ResourcesDep, caller: ReaderDep, level: UnitLevelParam) -> Response:
    """Each unit's level is its worst grid's; ``weighted_score`` is the population-weighted mean of its grid
    scores and ``worst_score`` the highest (docs/risk-index.md, "Roll-ups").

    Computed from the same cached read of the grid risk as ``/v1/grids/risk``, once per snapshot.
    """
    snapshot = current_risk(resources)
    scope = resources.scopes.of(caller)  # a scoped key: the units it shares grids with, from those grids only

    def render() -> bytes:
        scores = scores_from_rows(snapshot.grids)
        rolled = (roll_up(resources.registry, scores, level) if scope is None
                  else roll_up_in_scope(resources.registry, scores, level, scope))  # fmt: skip
        found = [unit.as_dict() for unit in rolled]
        counts = dict.fromkeys(LEVELS, 0)
        for unit in found:
            counts[unit["level"]] = counts.get(unit["level"], 0) + 1
        as_of = max((u["as_of"] for u in found if u["as_of"] is not None), default=None)
        summary = {"units": len(found), "levels": counts, "as_of": as_of, "fetched_at": snapshot.fetched_at}
        return dumps({"unit_level": level, "summary": summary, "units": found})

    return OrjsonResponse(snapshot.rendered(("units", level, scope.unit_id if scope else None), render))


@router.get(
    "/{level}/{unit_id}/risk",
    summary="One unit's rolled-up risk, with every grid of the unit",
    response_model=UnitRiskDetail,
    responses={404: {"model": ErrorBody, "description": "no unit of that level has this id"}, **_ERRORS},
)
def unit_risk(
    resources: ResourcesDep,
    caller: ReaderDep,
    level: UnitLevelParam,
    unit_id: Annotated[str, Path(description="unit id from the registry")],
) -> Response:
    registry = resources.registry
    # Checked against the registry first, so an unknown unit costs no ClickHouse round trip.
    grids = members(registry, level).get(unit_id)
    if grids is None:
        raise not_found(f"{level} {unit_id!r} is not in the registry", "unit_id")
    scope = resources.scopes.of(caller)
    if scope is not None and unit_id not in units_touching(registry, level, scope):
        raise ApiError(403, "out_of_scope", f"{level} {unit_id!r} is outside this key's scope ({scope.unit_id})",
                       "unit_id")  # fmt: skip
    snapshot = current_risk(resources)
    if scope is None:
        unit = roll_up_unit(registry, scores_from_rows(snapshot.grids), level, unit_id)
    else:
        unit = next(u for u in roll_up_in_scope(registry, scores_from_rows(snapshot.grids), level, scope)
                    if u.unit_id == unit_id)  # fmt: skip
        grids = [grid for grid in grids if grid.grid_id in scope]
    assert unit is not None  # same registry, same members
    grid_risks = [snapshot.by_id[grid.grid_id] for grid in grids]
    return OrjsonResponse({**unit.as_dict(), "fetched_at": snapshot.fetched_at, "grid_risks": grid_risks})
