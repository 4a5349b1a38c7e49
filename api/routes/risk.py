"""The live map: every grid's current risk, hot spots, one grid's detail."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from api.deps import ExecutorDep, RegistryDep, Resources, ResourcesDep
from api.errors import not_found
from api.models import ErrorBody, GridDetail, HotspotsResponse, RiskFeatureCollection, RiskResponse
from api.params import parse_levels
from api.responses import GeoJsonResponse, OrjsonResponse, dumps
from api.views import (
    RiskSnapshot,
    build_snapshot,
    close_ring,
    feature_collection,
    grid_info,
    select,
    summarize,
    top_by_score,
)
from pingan.store import risk
from pingan.store.client import Executor

router = APIRouter(prefix="/v1", tags=["risk"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "invalid parameter"},
    503: {"model": ErrorBody, "description": "ClickHouse unavailable"},
}


def current_risk(resources: Resources, executor: Executor) -> RiskSnapshot:
    """The cached risk of every grid: one ClickHouse read per ``api_cache_seconds``, however many pollers.

    The spatial term (docs/risk-index-spatial.md) is computed here, once per snapshot: it needs the whole
    district in view, which no worker partition has.
    """

    def load() -> RiskSnapshot:
        return build_snapshot(
            resources.registry,
            risk.latest(executor),
            resources.clock.now(),
            spatial=resources.spatial,
            levels=resources.risk_index,
        )

    return resources.risk_cache.get(load)


@router.get(
    "/grids/risk",
    summary="Current risk of every grid (the situation map)",
    response_model=RiskResponse,
    responses={
        200: {
            "description": "JSON by default; with `format=geojson` a GeoJSON FeatureCollection "
            "(`application/geo+json`, schema `RiskFeatureCollection`) with the grid polygons",
            "content": {"application/geo+json": {"schema": {"$ref": "#/components/schemas/RiskFeatureCollection"}}},
        },
        **_ERRORS,
    },
)
def grids_risk(
    resources: ResourcesDep,
    executor: ExecutorDep,
    output: Annotated[
        Literal["json", "geojson"], Query(alias="format", description="`geojson` adds the polygons")
    ] = "json",
    level: Annotated[
        str | None, Query(description="only these levels, comma-separated", examples=["red,orange"])
    ] = None,
    community_id: Annotated[str | None, Query(description="only the grids of this community")] = None,
) -> Response:
    """Every grid of the registry with its level and score; grids never assessed are green with score 0.

    ``score`` and ``level`` are what the map shows: the grid's own (``own_score``, ``own_level``), lifted by
    the spatial term when its neighbours are hot too (``spatial``), so clusters show as clusters.

    The summary counts the grids returned (after filters). The risk table is read at most once per
    ``api_cache_seconds`` (1 s by default) however many dashboards poll; ``summary.fetched_at`` says when.
    """
    levels = parse_levels(level)
    snapshot = current_risk(resources, executor)

    def render() -> bytes:
        items = select(snapshot.grids, levels, community_id)
        summary = summarize(items, snapshot)
        if output == "geojson":
            return dumps(feature_collection(items, resources.registry, summary))
        return dumps({"summary": summary, "grids": items})

    body = snapshot.rendered((output, levels, community_id), render)
    return (GeoJsonResponse if output == "geojson" else OrjsonResponse)(body)


@router.get(
    "/hotspots",
    summary="The grids with the highest current score",
    response_model=HotspotsResponse,
    responses=_ERRORS,
)
def hotspots(
    resources: ResourcesDep,
    executor: ExecutorDep,
    limit: Annotated[int, Query(ge=1, le=100, description="how many grids")] = 10,
) -> Response:
    """Highest shown score first (ties by grid id); grids with score 0 are never listed. Same snapshot as the
    map, so a grid lifted by the spatial term ranks by its lifted score."""
    snapshot = current_risk(resources, executor)
    ranked = top_by_score(snapshot.grids, limit)
    as_of = max((item["as_of"] for item in snapshot.grids if item["as_of"] is not None), default=None)
    return OrjsonResponse({"as_of": as_of, "fetched_at": snapshot.fetched_at, "hotspots": ranked})


@router.get(
    "/grids/{grid_id}",
    summary="One grid: registry data, polygon, current risk and why",
    response_model=GridDetail,
    responses={404: {"model": ErrorBody, "description": "unknown grid"}, **_ERRORS},
)
def grid_detail(
    resources: ResourcesDep,
    registry: RegistryDep,
    executor: ExecutorDep,
    grid_id: Annotated[str, Path(description="grid id from the registry")],
) -> Response:
    grid = registry.get(grid_id)
    if grid is None:
        raise not_found(f"grid {grid_id!r} is not in the registry", "grid_id")
    snapshot = current_risk(resources, executor)
    body = {
        **grid_info(grid),
        "polygon": [close_ring(grid.polygon)],
        "risk": snapshot.by_id[grid_id],
        "explanation": risk.explanation(executor, grid_id),
    }
    return OrjsonResponse(body)


# Imported by the app for the OpenAPI components the geojson response refers to.
GEOJSON_MODELS = (RiskFeatureCollection,)
