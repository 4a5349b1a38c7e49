"""The live map: every grid's current risk, hot spots, one grid's detail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from pingan.api.access import ReaderDep
from pingan.api.conditional import Rendered, accepts_gzip, entity_tag, gzipped_tag, not_modified, response_headers
from pingan.api.deps import ExecutorDep, RegistryDep, Resources, ResourcesDep
from pingan.api.errors import invalid, not_found
from pingan.api.models import (
    ErrorBody,
    GridDetail,
    HotspotsResponse,
    RiskFeatureCollection,
    RiskResponse,
    ShapesResponse,
)
from pingan.api.params import parse_levels
from pingan.api.responses import GeoJsonResponse, OrjsonResponse, dumps
from pingan.api.scopes import only_visible, require_grid
from pingan.api.snapshot import Versioned
from pingan.api.views import (
    RiskSnapshot,
    close_ring,
    feature_collection,
    grid_info,
    select,
    summarize,
    top_by_score,
)
from pingan.store import risk

router = APIRouter(prefix="/v1", tags=["risk"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "invalid parameter"},
    503: {"model": ErrorBody, "description": "ClickHouse unavailable"},
}


def current_risk(resources: Resources) -> RiskSnapshot:
    """The map's snapshot from memory (api/snapshot.py): polls never query ClickHouse while the background
    refresher keeps it fresh; with ``api_cache_seconds = 0`` every call re-checks the table (tests)."""
    return resources.snapshots.for_request(refreshed_in_background=_in_background(resources)).snapshot


def _in_background(resources: Resources) -> bool:
    return resources.settings.api_cache_seconds > 0  # the lifespan runs the refresher then


async def versioned_snapshot(resources: Resources) -> Versioned:
    """The snapshot from memory without leaving the event loop; a thread only when it must be read."""
    store, background = resources.snapshots, _in_background(resources)
    current = store.current
    if background and current is not None:
        return current
    return await anyio.to_thread.run_sync(lambda: store.for_request(refreshed_in_background=background))


async def conditional(request: Request, tag: str, identity: Callable[[], Awaitable[bytes]],
                      gzipped: Callable[[], Awaitable[bytes]], media: type[OrjsonResponse]) -> Response:  # fmt: skip
    """304 when ``If-None-Match`` names ``tag``; else the body, gzipped for clients that accept it, with its
    ETag (the gzip representation's ends in ``+gzip``) and Cache-Control."""
    use_gzip = accepts_gzip(request.headers.get("accept-encoding"))
    shown = gzipped_tag(tag) if use_gzip else tag
    if not_modified(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=response_headers(shown))
    if not use_gzip:
        return media(await identity(), headers=response_headers(shown))
    return media(await gzipped(), headers=response_headers(shown, {"Content-Encoding": "gzip"}))


async def snapshot_response(request: Request, snapshot: RiskSnapshot, variant: Any, render: Callable[[], bytes],
                            media: type[OrjsonResponse]) -> Response:  # fmt: skip
    """A body of ``snapshot`` rendered and gzipped once per snapshot and variant.

    Polls of an unchanged snapshot never leave the event loop; rendering and compressing run on a thread, so
    a 50,000-grid body does not stall other requests."""
    tag = entity_tag(snapshot.version, variant)

    async def identity() -> bytes:
        return snapshot.cached(variant) or await anyio.to_thread.run_sync(snapshot.rendered, variant, render)

    async def gzipped() -> bytes:
        key = (variant, "gzip")
        if (body := snapshot.cached(key)) is not None:
            return body
        plain = await identity()
        return await anyio.to_thread.run_sync(snapshot.rendered, key, lambda: Rendered(plain, tag).gzip())

    return await conditional(request, tag, identity, gzipped, media)


@router.get(
    "/grids/risk",
    summary="Current risk of every grid (the situation map)",
    response_model=RiskResponse,
    responses={
        200: {
            "description": "JSON by default; with `format=geojson` a GeoJSON FeatureCollection "
            "(`application/geo+json`, schema `RiskFeatureCollection`) with the grid polygons. "
            "`ETag` names the snapshot version; `Cache-Control: no-cache`.",
            "content": {"application/geo+json": {"schema": {"$ref": "#/components/schemas/RiskFeatureCollection"}}},
        },
        304: {"description": "`If-None-Match` names the current snapshot: nothing changed (no body)"},
        **_ERRORS,
    },
)
async def grids_risk(
    request: Request,
    resources: ResourcesDep,
    caller: ReaderDep,
    output: Annotated[
        Literal["json", "geojson"], Query(alias="format", description="`geojson` adds the polygons")
    ] = "json",
    level: Annotated[
        str | None, Query(description="only these levels, comma-separated", examples=["red,orange"])
    ] = None,
    community_id: Annotated[str | None, Query(description="only the grids of this community")] = None,
    since: Annotated[
        int | None,
        Query(
            ge=0,
            description="a `summary.version` seen before: only the grids changed since then "
            "(`full: false`); an unknown or too old version gives every grid (`full: true`). JSON only, "
            "not with `level`",
        ),
    ] = None,
) -> Response:
    """Every grid of the registry with its level and score; grids never assessed are green with score 0.

    ``score`` and ``level`` are what the map shows: the grid's own (``own_score``, ``own_level``), lifted by
    the spatial term when its neighbours are hot too (``spatial``), so clusters show as clusters.

    The summary counts the grids returned (after filters; with ``since``, the whole map). The map is served
    from memory, refreshed from ClickHouse every ``api_cache_seconds`` (0.5 s by default) and only when the
    risk table changed; ``summary.version`` changes exactly when a grid does, and is the ETag.
    """
    levels = parse_levels(level)
    if since is not None and (output == "geojson" or levels is not None):
        raise invalid("since: only with format=json and without level (a delta must list grids leaving a filter)",
                      "since")  # fmt: skip
    current = await versioned_snapshot(resources)
    snapshot = current.snapshot
    scope = resources.scopes.of(caller)  # a scoped key's map is its unit's grids (api/scopes.py)
    variant = (output, levels, community_id, since, scope.unit_id if scope else None)

    def render() -> bytes:
        items = only_visible(select(snapshot.grids, levels, community_id), scope)
        summary = summarize(items, snapshot)
        if output == "geojson":
            return dumps(feature_collection(items, resources.registry, summary))
        if since is None:
            return dumps({"summary": summary, "full": True, "since": None, "grids": items})
        changed = resources.snapshots.changed_since(since, current)
        grids = items if changed is None else only_visible(select(changed, None, community_id), scope)
        return dumps({"summary": summary, "full": changed is None, "since": since, "grids": grids})

    media = GeoJsonResponse if output == "geojson" else OrjsonResponse
    return await snapshot_response(request, snapshot, variant, render, media)


@router.get(
    "/grids/shapes",
    summary="Every grid's polygon and names, compact: what a map draws once (colours come from /v1/grids/risk)",
    response_model=ShapesResponse,
    responses={304: {"description": "`If-None-Match` names this registry: unchanged (no body)"}},
)
async def grid_shapes(request: Request, resources: ResourcesDep, caller: ReaderDep) -> Response:
    """The registry's polygons as `[lon, lat]` rings (6 decimals, about 0.1 m), with the unit ids of each
    grid for roll-up views (a scoped key: its unit's grids). Constant for the life of the process: poll
    `/v1/grids/risk` for colours."""
    scope = resources.scopes.of(caller)
    shapes, shapes_gzip = (resources.shapes, resources.shapes_gzip) if scope is None else resources.scopes.shapes(scope)

    async def identity() -> bytes:
        return shapes.identity

    async def gzipped() -> bytes:
        return shapes_gzip

    return await conditional(request, shapes.tag, identity, gzipped, OrjsonResponse)


@router.get(
    "/hotspots",
    summary="The grids with the highest current score",
    response_model=HotspotsResponse,
    responses=_ERRORS,
)
def hotspots(
    resources: ResourcesDep,
    caller: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=100, description="how many grids")] = 10,
) -> Response:
    """Highest shown score first (ties by grid id); grids with score 0 are never listed. Same snapshot as the
    map, so a grid lifted by the spatial term ranks by its lifted score."""
    snapshot = current_risk(resources)
    ranked = top_by_score(only_visible(snapshot.grids, resources.scopes.of(caller)), limit)
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
    caller: ReaderDep,
    registry: RegistryDep,
    executor: ExecutorDep,
    grid_id: Annotated[str, Path(description="grid id from the registry")],
) -> Response:
    grid = registry.get(grid_id)
    if grid is None:
        raise not_found(f"grid {grid_id!r} is not in the registry", "grid_id")
    require_grid(resources.scopes.of(caller), grid_id)
    snapshot = current_risk(resources)
    body = {
        **grid_info(grid),
        "polygon": [close_ring(grid.polygon)],
        "risk": snapshot.by_id[grid_id],
        "explanation": risk.explanation(executor, grid_id),
    }
    return OrjsonResponse(body)


# Imported by the app for the OpenAPI components the geojson response refers to.
GEOJSON_MODELS = (RiskFeatureCollection,)
