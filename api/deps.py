"""What handlers reach through ``Depends``: everything is created and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from pingan.api.alert_feed import AlertFeed
from pingan.api.conditional import Rendered
from pingan.api.incidents import IncidentDesk
from pingan.api.ingest_auth import KeyRing
from pingan.api.ingest_gateway import IngestGateway
from pingan.api.readiness import KafkaProbe
from pingan.api.scopes import ScopeIndex
from pingan.api.snapshot import SnapshotStore
from pingan.api.storage import Storage
from pingan.clock import Clock
from pingan.grids import GridRegistry
from pingan.index.scoring import IndexConfig
from pingan.index.spatial import SpatialConfig
from pingan.settings import Settings
from pingan.store.client import Executor


@dataclass(frozen=True)
class Resources:
    settings: Settings
    registry: GridRegistry
    clock: Clock
    storage: Storage
    # The map's snapshot in memory, refreshed by the lifespan's background task (api/snapshot.py).
    snapshots: SnapshotStore
    kafka: KafkaProbe
    ingest: IngestGateway
    # The worker's index definition (its colour bands) and the spatial term the map snapshot applies.
    risk_index: IndexConfig
    spatial: SpatialConfig
    # The registry's polygons (GET /v1/grids/shapes), rendered and gzipped once at start-up.
    shapes: Rendered
    shapes_gzip: bytes
    # The newest alerts, read once a second for every alert stream (api/alert_feed.py).
    alert_feed: AlertFeed
    # API keys and their roles (the keys file the ingest gateway reads too); api/access.py.
    keys: KeyRing
    # Unit scopes of keys (api/scopes.py) and the incidents of alerts (api/incidents.py).
    scopes: ScopeIndex
    incidents: IncidentDesk


async def get_resources(request: Request) -> Resources:
    resources: Resources | None = getattr(request.app.state, "resources", None)
    if resources is None:
        raise RuntimeError("the API's lifespan has not run (serve it, or enter app.router.lifespan_context)")
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


async def get_registry(resources: ResourcesDep) -> GridRegistry:
    return resources.registry


async def get_clock(resources: ResourcesDep) -> Clock:
    return resources.clock


async def get_executor(resources: ResourcesDep) -> Executor:
    """The ClickHouse executor. Handlers using it are plain ``def``: its calls block (threadpool)."""
    return resources.storage.executor


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[GridRegistry, Depends(get_registry)]
ClockDep = Annotated[Clock, Depends(get_clock)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]
