"""The FastAPI application and its lifespan; :func:`serve` runs it with uvicorn (``pingan api``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware

import pingan
from pingan.api import errors, ingest
from pingan.api.access import check_open_read, reader
from pingan.api.alert_feed import AlertFeed
from pingan.api.conditional import GZIP_LEVEL, Rendered
from pingan.api.deps import Resources
from pingan.api.incidents import ActionPublisher, IncidentDesk
from pingan.api.ingest_auth import KeyRing
from pingan.api.ingest_gateway import IngestGateway
from pingan.api.ingest_models import OPENAPI_MODELS as INGEST_MODELS
from pingan.api.metrics import ApiMetrics, LatencyMiddleware
from pingan.api.readiness import KafkaProbe
from pingan.api.responses import OrjsonResponse, dumps
from pingan.api.routes import alerts, grids, me, ops, published, risk, units, web, webhooks
from pingan.api.routes import feeds as feed_routes
from pingan.api.scopes import ScopeIndex
from pingan.api.snapshot import SnapshotStore
from pingan.api.storage import Storage
from pingan.api.views import RiskSnapshot, build_snapshot, shapes_body
from pingan.clock import Clock, SystemClock
from pingan.errors import StorageError
from pingan.feeds import load_feeds
from pingan.grids import GridRegistry
from pingan.index.loading import load_index
from pingan.settings import Settings
from pingan.store import risk as risk_store

log = logging.getLogger(__name__)

STARTUP_SCHEMA_SECONDS = 10.0

DESCRIPTION = """\
Four-colour public-safety risk per grid (网格), computed by the Pingan worker from 110 calls, camera
analytics, checkpoints and app reports.

Dashboards poll `/v1/grids/risk` (add `format=geojson` for the polygons) and `/v1/hotspots`; both are
served from memory (one snapshot, refreshed when the risk table changes) with an `ETag` (send
`If-None-Match` to get `304`), gzip for clients that accept it, and `?since=<version>` for only the grids
that changed. The live map page is at `/`.
"""


def create_app(settings: Settings, *, registry: GridRegistry | None = None, clock: Clock | None = None) -> FastAPI:
    """The API. Nothing connects here: the lifespan loads the registry, applies migrations and owns clients."""
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_open_read(settings)  # before anything starts: open read is for the loopback demo only
        grid_registry = registry or await anyio.to_thread.run_sync(GridRegistry.load, settings.grid_registry_path)
        # The same feeds as the worker (built-in, plugins, feeds.toml), so both accept the same sources.
        feeds = load_feeds(settings)
        # Reads the ingest keys (a bad file stops start-up); its producer connects on the first ingest request.
        # The webhooks of every feed share it.
        gateway = IngestGateway.create(settings, grid_registry, clock, feeds=feeds)
        # The worker's own index document (risk-index.toml + feed sections): the map's spatial term colours
        # lifted scores with the worker's bands. A bad file stops start-up, as it stops the worker.
        loaded = load_index(settings, feeds)
        risk_index, spatial = loaded.config, loaded.spatial
        storage = Storage(settings)
        try:
            # Bounded: a server that accepts connections but never answers must not keep the API (and its
            # liveness probe) down for the driver's 60 s timeout.
            with anyio.fail_after(STARTUP_SCHEMA_SECONDS):
                await anyio.to_thread.run_sync(storage.ensure_schema, abandon_on_cancel=True)
        except (StorageError, TimeoutError) as exc:
            # Serve anyway: readyz reports it, and the first query after ClickHouse returns migrates.
            log.warning("ClickHouse not ready at start-up, migrations deferred: %s", str(exc) or "timed out")
        kafka = KafkaProbe(settings)
        executor = storage.executor

        def load_snapshot(version: int) -> RiskSnapshot:
            return build_snapshot(grid_registry, risk_store.latest(executor), clock.now(),
                                  spatial=spatial, levels=risk_index, version=version)  # fmt: skip

        alert_feed = AlertFeed(executor)
        keys = KeyRing.load(settings.ingest_keys_path)
        scopes = ScopeIndex(grid_registry)
        scopes.check(keys)  # logs keys whose scope names no unit of the registry (they see nothing)
        publisher = ActionPublisher(settings)
        incident_desk = IncidentDesk(executor, grid_registry, settings, clock, publisher)
        snapshots = SnapshotStore(load_snapshot, lambda: risk_store.change_marker(executor))
        shapes_bytes = dumps(shapes_body(grid_registry))
        shapes = Rendered(shapes_bytes, f'"shapes-{hashlib.blake2b(shapes_bytes, digest_size=8).hexdigest()}"')
        app.state.resources = Resources(
            settings=settings,
            registry=grid_registry,
            clock=clock,
            storage=storage,
            snapshots=snapshots,
            kafka=kafka,
            ingest=gateway,
            risk_index=risk_index,
            spatial=spatial,
            shapes=shapes,
            shapes_gzip=shapes.gzip(),
            keys=keys,
            alert_feed=alert_feed,
            scopes=scopes,
            incidents=incident_desk,
        )
        # Background reads (the map snapshot, the alert feed); none with api_cache_seconds = 0 (tests), where
        # requests read for themselves.
        background = []
        if settings.api_cache_seconds > 0:
            background.append(asyncio.create_task(refresh_snapshots(snapshots, settings.api_cache_seconds)))
            background.append(asyncio.create_task(alert_feed.run(alerts.SSE_POLL_SECONDS)))
            if settings.incident_check_seconds > 0:
                background.append(asyncio.create_task(incident_desk.run(settings.incident_check_seconds)))
        log.info(
            "API ready: %d grids, ClickHouse database %s, spatial term %s",
            len(grid_registry),
            settings.clickhouse_database,
            "on" if spatial.enabled else "off",
        )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            del app.state.resources
            await gateway.close()
            await publisher.close()
            await kafka.close()
            await anyio.to_thread.run_sync(storage.close)

    app = FastAPI(
        title="Pingan API",
        version=pingan.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    errors.install(app)
    # Outermost first: CORS answers preflights before anything else; gzip compresses what routes did not
    # (the map bodies are compressed once per snapshot by the routes themselves and pass through).
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=GZIP_LEVEL)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "If-None-Match", "Last-Event-ID", "Content-Type"],
            expose_headers=["ETag", "Retry-After"],
            max_age=600,
        )
    # Outermost: times every request, compression and CORS included.
    metrics = ApiMetrics()
    app.state.metrics = metrics
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    # Order matters: /v1/grids/risk must be matched before /v1/grids/{grid_id}.
    # Reads need a key of a reading role (api/access.py); ops routes check per route (healthz stays open).
    read_only = [Depends(reader)]
    app.include_router(risk.router, dependencies=read_only)
    app.include_router(grids.router, dependencies=read_only)
    app.include_router(ops.router)
    app.include_router(units.router, dependencies=read_only)
    app.include_router(published.router, dependencies=read_only)
    app.include_router(alerts.router, dependencies=read_only)
    app.include_router(me.router, dependencies=read_only)
    app.include_router(ingest.router)
    app.include_router(webhooks.router)
    app.include_router(feed_routes.router, dependencies=read_only)
    app.include_router(web.router)
    web.mount_static(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            # The geojson variant of /v1/grids/risk and the ingest request body are documented by hand;
            # publish their schemas too.
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (*risk.GEOJSON_MODELS, *INGEST_MODELS):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            open_paths = {"/healthz", "/metrics"}
            errors.document_problems(schema, protected=set(schema["paths"]) - open_paths)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def refresh_snapshots(snapshots: SnapshotStore, interval: float) -> None:
    """Keep the map's snapshot fresh: probe every ``interval`` seconds, read when the risk table changed.

    A failure keeps the previous snapshot (its ``fetched_at`` and the snapshot-age metric show how stale it
    is) and tries again at the next interval."""
    while True:
        try:
            # Not abandoned on cancel: shutdown waits for the query, so no client outlives the storage.
            await anyio.to_thread.run_sync(snapshots.refresh)
        except StorageError as exc:
            log.warning("map snapshot not refreshed: %s", exc)
        except Exception:
            log.exception("map snapshot refresh failed")
        await asyncio.sleep(interval)


def serve(settings: Settings) -> None:
    """Run the API with uvicorn on ``settings.api_host:api_port`` until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")
