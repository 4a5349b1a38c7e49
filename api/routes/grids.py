"""The registry listing, and the history and baseline of one grid."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime
from starlette.responses import Response

from pingan.api.access import ReaderDep
from pingan.api.deps import ClockDep, ExecutorDep, RegistryDep, ResourcesDep, SettingsDep
from pingan.api.errors import not_found
from pingan.api.models import BaselineResponse, ErrorBody, GridsResponse, HistoryResponse
from pingan.api.params import history_range
from pingan.api.responses import OrjsonResponse
from pingan.api.scopes import require_grid, visible
from pingan.api.views import baseline_body, grid_info
from pingan.baselines import grid_baseline
from pingan.store import windows

router = APIRouter(prefix="/v1", tags=["grids"])

_TIME_HELP = "ISO-8601 with a zone, e.g. 2026-11-23T08:00:00Z (encode '+' as %2B in offsets)"


@router.get("/grids", summary="The grid registry (no risk)", response_model=GridsResponse)
def list_grids(
    resources: ResourcesDep,
    caller: ReaderDep,
    registry: RegistryDep,
    community_id: Annotated[str | None, Query(description="only the grids of this community")] = None,
) -> Response:
    scope = resources.scopes.of(caller)
    grids = [
        grid_info(g)
        for g in registry.grids
        if (community_id is None or g.community_id == community_id) and visible(scope, g.grid_id)
    ]
    return OrjsonResponse({"count": len(grids), "grids": grids})


@router.get(
    "/grids/{grid_id}/history",
    summary="A grid's windows over time, grouped by step",
    response_model=HistoryResponse,
    responses={
        404: {"model": ErrorBody, "description": "unknown grid"},
        422: {"model": ErrorBody, "description": "bad range or step"},
        503: {"model": ErrorBody, "description": "ClickHouse unavailable"},
    },
)
def grid_history(
    resources: ResourcesDep,
    caller: ReaderDep,
    registry: RegistryDep,
    clock: ClockDep,
    settings: SettingsDep,
    executor: ExecutorDep,
    grid_id: Annotated[str, Path(description="grid id from the registry")],
    start: Annotated[
        AwareDatetime | None, Query(description=f"inclusive; default 24 h before end. {_TIME_HELP}")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(description=f"exclusive; default now. {_TIME_HELP}")] = None,
    step: Annotated[
        int, Query(description="seconds per point: a multiple of the window size (300), at most 86400")
    ] = 300,
) -> Response:
    """Windows whose start lies in [start, end), summed per step: events, highest score, worst level.

    At most 31 days per request. Steps with no windows are omitted.
    """
    grid = registry.get(grid_id)
    if grid is None:
        raise not_found(f"grid {grid_id!r} is not in the registry", "grid_id")
    require_grid(resources.scopes.of(caller), grid_id)
    span = history_range(start, end, step, now=clock.now(), bucket_seconds=settings.window_seconds)
    points = windows.history(executor, grid_id, span.start, span.end, span.step)
    body: dict[str, Any] = {
        "grid_id": grid_id,
        "name": grid.name,
        "start": span.start,
        "end": span.end,
        "step": span.step,
        "windows": points,
    }
    return OrjsonResponse(body)


@router.get(
    "/grids/{grid_id}/baseline",
    summary="What is normal for a grid: expected weighted count per source and hour of the week",
    response_model=BaselineResponse,
    responses={
        404: {"model": ErrorBody, "description": "unknown grid"},
        503: {"model": ErrorBody, "description": "ClickHouse unavailable"},
    },
)
def grid_baseline_route(
    resources: ResourcesDep,
    caller: ReaderDep,
    registry: RegistryDep,
    settings: SettingsDep,
    executor: ExecutorDep,
    grid_id: Annotated[str, Path(description="grid id from the registry")],
) -> Response:
    """The expectation the worker's surprise index compares each window with (docs/risk-index.md,
    "Baselines"): the snapshot it scores with (newest, or ``PINGAN_BASELINE_VERSION``), shrunk towards the
    grid's type/population prior; the priors alone before any snapshot is learned."""
    grid = registry.get(grid_id)
    if grid is None:
        raise not_found(f"grid {grid_id!r} is not in the registry", "grid_id")
    require_grid(resources.scopes.of(caller), grid_id)
    model = grid_baseline(executor, resources.risk_index, grid, settings.baseline_version)
    return OrjsonResponse(baseline_body(model, grid_id, resources.risk_index))
