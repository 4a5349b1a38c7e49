"""Response bodies as pydantic models: they document the API in OpenAPI and the tests validate real
responses against them (handlers render with orjson and do not pass through these models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pingan.index.levels import LevelName

Level = LevelName

_AS_OF = "2026-11-23T14:05:00Z"


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code: not_found, invalid_parameter, storage_unavailable…")
    message: str = Field(description="a sentence for a person")
    field: str | None = Field(default=None, description="the offending parameter, when there is one")


class ErrorBody(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`): every 4xx and 5xx of the API."""

    model_config = ConfigDict(
        title="Problem",
        json_schema_extra={
            "examples": [{"type": "urn:pingan:problem:invalid_parameter", "title": "Invalid parameter",
                          "status": 422, "detail": "step: must be a multiple of 300 seconds (the window size) "
                          "and at most 86400", "code": "invalid_parameter", "field": "step",
                          "error": {"code": "invalid_parameter", "message": "step: must be a multiple of 300 "
                                    "seconds (the window size) and at most 86400", "field": "step"}}]
        },
    )  # fmt: skip

    type: str = Field(description="URI naming the kind of problem: `urn:pingan:problem:<code>`")
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request, for a person")
    code: str = Field(description="stable machine-readable code (the end of `type`)")
    field: str | None = Field(default=None, description="the offending parameter, when there is one")
    error: ErrorDetail = Field(description="deprecated: the same in the API's first error format")


class SpatialTerm(BaseModel):
    """The spatial term of a grid (docs/risk-index-spatial.md): how hot its neighbourhood is, and the lift."""

    gi_star_z: float = Field(
        description="Getis-Ord Gi* z-score of the grid together with its neighbours (the hot-spot statistic, "
        "reported only: a lone hot grid has a high Gi* from its own score)"
    )
    gi_z: float = Field(
        description="Getis-Ord Gi z-score of the neighbours alone (the grid left out); above the configured "
        "threshold (1.96 by default) it drives the lift"
    )
    hot_neighbours: int = Field(description="neighbours (sharing an edge) whose own score counts as hot")
    lift: float = Field(description="points added to own_score to give score; 0 when the grid is not lifted")


class GridRisk(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"grid_id": "G0412", "name": "东城社区第3网格", "community_id": "C015", "subdistrict_id": "S02",
                 "police_station_id": "P04", "level": "orange", "score": 108.3, "as_of": _AS_OF,
                 "dominant_source": "call110", "window_events": 23, "config_version": "2026.1",
                 "own_score": 71.5, "own_level": "yellow",
                 "spatial": {"gi_star_z": 7.912, "gi_z": 5.644, "hot_neighbours": 3, "lift": 36.8}}
            ]
        }
    )  # fmt: skip

    grid_id: str
    name: str
    community_id: str
    subdistrict_id: str
    police_station_id: str
    level: Level = Field(
        description="four-colour level shown on the map: own_level, raised (never lowered) to the level of the "
        "lifted score when the spatial term lifts the grid; green when the grid has no assessment"
    )
    score: float = Field(
        description="risk score shown (higher is worse; 0-200 and beyond): own_score + spatial.lift; "
        "0 when never assessed"
    )
    as_of: datetime | None = Field(description="end of the window the assessment was computed at (UTC)")
    dominant_source: str | None = Field(description="the event source that drives the score")
    window_events: int = Field(description="events in the hopping window behind the score")
    config_version: str | None = Field(description="version of the index definition that produced the score")
    own_score: float = Field(description="the grid's own score from its own events, as the worker stored it")
    own_level: Level = Field(
        description="the grid's own level as the worker stored it (held up by hysteresis); green when never assessed"
    )
    spatial: SpatialTerm | None = Field(
        description="the spatial term behind the lift; null when the spatial term is disabled"
    )


class RiskSummary(BaseModel):
    grids: int = Field(description="grids in this response (after filters)")
    levels: dict[Level, int] = Field(description="grids per level (after filters); every level is present")
    as_of: datetime | None = Field(description="newest assessment among these grids")
    fetched_at: datetime = Field(description="when the API read this version of the risk table")
    unregistered_grids: int = Field(description="risk rows for grid ids missing from the registry")
    version: int = Field(
        description="snapshot version: changes exactly when a grid's risk does; pass it as `since` to get "
        "only what changed (also the `ETag`)"
    )


class RiskResponse(BaseModel):
    summary: RiskSummary
    full: bool = Field(description="true: every grid (after filters); false: only the grids changed since `since`")
    since: int | None = Field(description="the `since` asked for; null without it")
    grids: list[GridRisk]


class GridShape(BaseModel):
    grid_id: str
    name: str
    community_id: str
    subdistrict_id: str
    district_id: str
    police_station_id: str
    ring: list[tuple[float, float]] = Field(description="closed ring of [lon, lat] (WGS-84, 6 decimals)")


class ShapesResponse(BaseModel):
    count: int
    grids: list[GridShape]


class PolygonGeometry(BaseModel):
    type: Literal["Polygon"]
    coordinates: list[list[tuple[float, float]]] = Field(description="one closed ring of [lon, lat] (WGS-84)")


class RiskFeature(BaseModel):
    type: Literal["Feature"]
    id: str
    geometry: PolygonGeometry
    properties: GridRisk


class RiskFeatureCollection(BaseModel):
    """The risk map as GeoJSON (``?format=geojson``, media type application/geo+json)."""

    type: Literal["FeatureCollection"]
    features: list[RiskFeature]
    summary: RiskSummary = Field(description="foreign member (RFC 7946 §6.1) with the same summary as JSON")


class HistoryPoint(BaseModel):
    start: datetime = Field(description="start of the step (UTC)")
    events: int = Field(description="events in the step's windows")
    max_score: float = Field(description="highest score of the step's windows")
    level: Level = Field(description="worst level of the step's windows")
    windows: int = Field(description="stored windows (of window_seconds each) in the step")


class SourceBaseline(BaseModel):
    source: str
    unit_weight: float = Field(description="sum of squared event weights / sum of weights: the unit surprise counts in")
    mean_per_hour: float = Field(description="expected weighted count per hour, averaged over the week")
    peak_hour_of_week: int = Field(description="hour of the week with the highest expectation (0 = Mon 00:00 UTC)")
    expected_per_hour: list[float] = Field(
        description="168 values: expected weighted count in each hour of the week, from Monday 00:00 UTC"
    )


class BaselineResponse(BaseModel):
    grid_id: str
    baseline_version: str = Field(description="the learned snapshot the worker scores with, or `prior` before any")
    config_version: str = Field(description="the index config whose weights and priors apply")
    sources: list[SourceBaseline]


class HistoryResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"grid_id": "G0412", "name": "东城社区第3网格", "start": "2026-11-22T14:00:00Z",
                 "end": "2026-11-23T14:07:12Z", "step": 3600,
                 "windows": [{"start": "2026-11-23T09:00:00Z", "events": 41, "max_score": 64.0,
                             "level": "yellow", "windows": 9}]}
            ]
        }
    )  # fmt: skip

    grid_id: str
    name: str
    start: datetime
    end: datetime
    step: int = Field(description="seconds per point")
    windows: list[HistoryPoint] = Field(description="one per step that has windows; quiet steps are omitted")


class HotspotsResponse(BaseModel):
    as_of: datetime | None
    fetched_at: datetime
    hotspots: list[GridRisk] = Field(description="highest score first; grids with score 0 are never hot spots")


class GridInfo(BaseModel):
    grid_id: str
    name: str
    grid_type: str
    population: int
    households: int
    area_km2: float
    district_id: str
    subdistrict_id: str
    community_id: str
    police_station_id: str
    centroid: tuple[float, float] = Field(description="[lon, lat]")
    bbox: tuple[float, float, float, float] = Field(description="[min lon, min lat, max lon, max lat]")


class GridsResponse(BaseModel):
    count: int
    grids: list[GridInfo]


class GridDetail(GridInfo):
    polygon: list[list[tuple[float, float]]] = Field(description="GeoJSON Polygon coordinates (closed ring)")
    risk: GridRisk
    explanation: dict[str, Any] | None = Field(
        description="why the grid has its own colour (null when never assessed): per source the sub-index, "
        "observed vs expected weighted count, surprise (-log10 p) with the volume and surprise indices; the "
        "heaviest event types; hysteresis; config and baseline versions (docs/risk-index.md)"
    )


class DeadLetter(BaseModel):
    topic: str
    partition: int
    offset: int
    received_at: datetime
    kind: str = Field(description="why it was rejected: bad_json, missing_field, no_grid…")
    field: str = Field(description="dotted path of the offending field, empty when none")
    reason: str
    raw: str = Field(description="the original record (UTF-8, replacement characters for invalid bytes)")
    raw_truncated: bool = Field(description="raw was cut to keep the response small")
    redacted: bool = Field(
        description="plates, phones and person ids in raw and reason were pseudonymised "
        "or masked (every role but admin)"
    )


class DeadLettersResponse(BaseModel):
    count_by_kind: dict[str, int] = Field(description="all stored dead letters per kind")
    dead_letters: list[DeadLetter] = Field(description="most recent first")


class Health(BaseModel):
    status: Literal["alive"]


class BrokerCheck(BaseModel):
    ok: bool
    latency_ms: float
    topics: int | None = None
    error: str | None = None


class ClickHouseCheck(BaseModel):
    ok: bool
    latency_ms: float
    version: str | None = None
    error: str | None = None


class PartitionLag(BaseModel):
    partition: int
    committed: int | None
    end: int
    lag: int


class LogLoss(BaseModel):
    detected_at: str
    worker: str
    topic: str
    partition: int
    reason: Literal["log_lost", "state_lost"] = Field(
        description="log_lost: the input log was shorter than what was done in it, or held other records; "
        "state_lost: the window-state changelog held nothing while ClickHouse had the partition's events"
    )
    done_offset: int = Field(description="records done in the old log (-1: unknown)")
    end_offset: int = Field(description="where the log ended when found lost (-1: unknown)")
    restart_offset: int = Field(description="where reading went on in the new log")
    rebuilt: bool
    rebuilt_from: Literal["kept", "clickhouse"] | None = Field(
        description="kept: the worker still had the state; clickhouse: replayed from the stored events"
    )
    rebuilt_events: int
    rebuilt_at: str | None


class LogLosses(BaseModel):
    since: str | None = None
    rebuilding: int | None = Field(default=None, description="detections whose window state is not whole yet")
    detected: list[LogLoss] | None = None
    error: str | None = None


class WorkerCheck(BaseModel):
    status: Literal["ok", "lagging", "idle", "not_consuming", "no_topic", "unknown", "rebuilding"] = Field(
        description="ok; lagging above the threshold; idle/not_consuming when the group never committed; "
        "no_topic when the events topic does not exist; unknown when the lag could not be read; rebuilding "
        "while a partition whose log was lost has its window state rebuilt"
    )
    group: str
    topic: str
    lag: int | None = Field(description="events not yet processed, summed over partitions")
    partitions: list[PartitionLag] | None = None
    error: str | None = None
    log_losses: LogLosses | None = Field(default=None, description="lost logs the worker detected in the last 24 h")


class ReadyChecks(BaseModel):
    broker: BrokerCheck
    clickhouse: ClickHouseCheck
    worker: WorkerCheck


class Ready(BaseModel):
    status: Literal["ready"]
    checks: ReadyChecks | None = Field(default=None, description="only for a request with an API key")


class NotReady(ErrorBody):
    """A problem document (503 not_ready) with the checks that failed (those only with an API key)."""

    checks: ReadyChecks | None = None
