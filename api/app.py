"""The FastAPI application and its lifespan; :func:`serve` runs it with uvicorn (``pingan api``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

import pingan
from api import errors, ingest
from api.cache import TTLCache
from api.deps import Resources
from api.ingest_gateway import IngestGateway
from api.ingest_models import OPENAPI_MODELS as INGEST_MODELS
from api.readiness import KafkaProbe
from api.responses import OrjsonResponse
from api.routes import alerts, grids, ops, published, risk, units, webhooks
from api.routes import feeds as feed_routes
from api.storage import Storage
from api.views import RiskSnapshot
from pingan.clock import Clock, SystemClock
from pingan.errors import StorageError
from pingan.feeds import index_document, load_feeds
from pingan.grids import GridRegistry
from pingan.settings import Settings
from streams.risk_index import parse_config
from streams.spatial import parse_spatial

log = logging.getLogger(__name__)

STARTUP_SCHEMA_SECONDS = 10.0

DESCRIPTION = """\
Four-colour public-safety risk per grid (网格), computed by the Pingan worker from 110 calls, camera
analytics, checkpoints and app reports.

Dashboards poll `/v1/grids/risk` (add `format=geojson` for the polygons) and `/v1/hotspots`; both are
served from one cached read of the risk table. Errors share one body: `{"error": {"code", "message", "field"}}`.
"""


def create_app(settings: Settings, *, registry: GridRegistry | None = None, clock: Clock | None = None) -> FastAPI:
    """The API. Nothing connects here: the lifespan loads the registry, applies migrations and owns clients."""
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grid_registry = registry or await anyio.to_thread.run_sync(GridRegistry.load, settings.grid_registry_path)
        # The same feeds as the worker (built-in, plugins, feeds.toml), so both accept the same sources.
        feeds = load_feeds(settings)
        # Reads the ingest keys (a bad file stops start-up); its producer connects on the first ingest request.
        # The webhooks of every feed share it.
        gateway = IngestGateway.create(settings, grid_registry, clock, feeds=feeds)
        # The worker's own index document (risk-index.toml + feed sections): the map's spatial term colours
        # lifted scores with the worker's bands. A bad file stops start-up, as it stops the worker.
        risk_document = index_document(settings, feeds)
        risk_index = parse_config(risk_document)
        spatial = parse_spatial(risk_document)
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
        app.state.resources = Resources(
            settings=settings,
            registry=grid_registry,
            clock=clock,
            storage=storage,
            risk_cache=TTLCache[RiskSnapshot](settings.api_cache_seconds),
            kafka=kafka,
            ingest=gateway,
            risk_index=risk_index,
            spatial=spatial,
        )
        log.info(
            "API ready: %d grids, ClickHouse database %s, spatial term %s",
            len(grid_registry),
            settings.clickhouse_database,
            "on" if spatial.enabled else "off",
        )
        try:
            yield
        finally:
            del app.state.resources
            await gateway.close()
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
    # Order matters: /v1/grids/risk must be matched before /v1/grids/{grid_id}.
    app.include_router(risk.router)
    app.include_router(grids.router)
    app.include_router(ops.router)
    app.include_router(units.router)
    app.include_router(published.router)
    app.include_router(alerts.router)
    app.include_router(ingest.router)
    app.include_router(webhooks.router)
    app.include_router(feed_routes.router)

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
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def serve(settings: Settings) -> None:
    """Run the API with uvicorn on ``settings.api_host:api_port`` until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")
