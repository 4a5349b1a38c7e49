"""The API against the real ClickHouse and broker: rows go in through pingan.store, answers come out over
HTTP (in-process ASGI, with the app's lifespan)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from pingan.api.app import create_app
from pingan.api.deps import ResourcesDep, get_executor
from pingan.api.models import (
    DeadLettersResponse,
    ErrorBody,
    GridDetail,
    GridsResponse,
    HistoryResponse,
    HotspotsResponse,
    NotReady,
    Ready,
    RiskFeatureCollection,
    RiskResponse,
)
from pingan.clock import FixedClock
from pingan.grids import GridRegistry
from pingan.index.records import RiskUpdate, WindowRow
from pingan.settings import Settings
from pingan.store import dead_letters, risk, windows
from pingan.store.client import Executor, connect
from pingan.topics import ensure_topics
from tests.support.defaults import shipped_registry
from tests.support.kafka import produce
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    registry: GridRegistry
    writer: Executor
    settings: Settings


@asynccontextmanager
async def running_api(settings: Settings, **overrides: Any) -> AsyncIterator[Api]:
    settings = settings.model_copy(update=overrides)
    registry = shipped_registry()
    app = create_app(settings, registry=registry, clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        writer = connect(settings)  # the lifespan has created the database and applied migrations
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield Api(app, client, registry, writer, settings)
        finally:
            writer.close()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings, api_cache_seconds=0) as running:
        yield running


# The shipped colour bands with the spatial term off: the map shows the stored own scores and levels.
_WITHOUT_SPATIAL = """\
version = "test-without-spatial"
[levels]
yellow = 50.0
orange = 100.0
red = 150.0
[severity_multiplier]
3 = 1.0
[sources.call110]
breakpoints = [[0.0, 0.0], [3.0, 50.0]]
[spatial]
enabled = false
"""


@pytest.fixture
async def api_without_spatial(settings: Settings, tmp_path: Path) -> AsyncIterator[Api]:
    """For tests of the map as the store holds it: neighbouring grids they insert are not lifted."""
    config = tmp_path / "risk-index.toml"
    config.write_text(_WITHOUT_SPATIAL, encoding="utf-8")
    async with running_api(settings, api_cache_seconds=0, risk_config_path=config) as running:
        yield running


def _update(grid_id: str, score: float, level: str, version: int = 1, minutes_ago: int = 5) -> RiskUpdate:
    return RiskUpdate(
        grid_id, NOW - timedelta(minutes=minutes_ago), score, level, "", 12, "call110", {"call110": score}, "2026.1",
        version,
    )  # fmt: skip


def _error(response: httpx.Response, status: int, code: str, field: str | None) -> str:
    assert response.status_code == status, response.text
    body = ErrorBody.model_validate(response.json())
    assert (body.error.code, body.error.field) == (code, field), response.text
    assert "Traceback" not in response.text
    return body.error.message


async def test_risk_map_has_every_grid_with_inserted_levels_and_green_elsewhere(api: Api) -> None:
    grids = api.registry.grids
    red, orange, yellow = grids[0].grid_id, grids[100].grid_id, grids[500].grid_id
    risk.insert(
        api.writer, [_update(red, 60.0, "orange"), _update(orange, 70.0, "orange"), _update(yellow, 40.0, "yellow")]
    )
    # a newer version replaces the first; a grid the registry does not know is counted, not listed
    risk.insert(api.writer, [_update(red, 92.5, "red", version=2, minutes_ago=1), _update("NOT-A-GRID", 99.0, "red")])

    response = await api.client.get("/v1/grids/risk")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = RiskResponse.model_validate(response.json())
    assert len(body.grids) == len(grids) >= 900
    assert [g.grid_id for g in body.grids] == [g.grid_id for g in grids]
    by_id = {g.grid_id: g for g in body.grids}
    assert (by_id[red].level, by_id[red].score, by_id[red].as_of) == ("red", 92.5, NOW - timedelta(minutes=1))
    assert (by_id[orange].level, by_id[yellow].level) == ("orange", "yellow")
    assert by_id[red].name == grids[0].name and by_id[red].community_id == grids[0].community_id
    assert (by_id[red].dominant_source, by_id[red].window_events) == ("call110", 12)
    assert by_id[red].config_version == "2026.1"
    quiet = [g for g in body.grids if g.grid_id not in {red, orange, yellow}]
    assert {(g.level, g.score, g.as_of, g.dominant_source) for g in quiet} == {("green", 0.0, None, None)}
    assert body.summary.levels == {"green": len(grids) - 3, "yellow": 1, "orange": 1, "red": 1}
    assert body.summary.as_of == NOW - timedelta(minutes=1)
    assert body.summary.unregistered_grids == 1
    assert body.summary.fetched_at == NOW

    filtered = RiskResponse.model_validate((await api.client.get("/v1/grids/risk?level=red,orange")).json())
    assert sorted(g.grid_id for g in filtered.grids) == sorted([red, orange])
    assert filtered.summary.levels == {"green": 0, "yellow": 0, "orange": 1, "red": 1}
    community = grids[0].community_id
    mine = RiskResponse.model_validate((await api.client.get(f"/v1/grids/risk?community_id={community}")).json())
    assert [g.grid_id for g in mine.grids] == [g.grid_id for g in grids if g.community_id == community]

    detail = GridDetail.model_validate((await api.client.get(f"/v1/grids/{red}")).json())
    assert (detail.risk.level, detail.population) == ("red", grids[0].population)
    assert detail.polygon[0][0] == detail.polygon[0][-1]
    listing = GridsResponse.model_validate((await api.client.get("/v1/grids")).json())
    assert listing.count == len(grids)


async def test_geojson_is_a_feature_collection_of_closed_lon_lat_rings(api: Api) -> None:
    grid = api.registry.grids[7]
    risk.insert(api.writer, [_update(grid.grid_id, 75.0, "orange")])
    response = await api.client.get("/v1/grids/risk", params={"format": "geojson"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    document = response.json()
    RiskFeatureCollection.model_validate(document)
    assert document["type"] == "FeatureCollection"
    assert len(document["features"]) == len(api.registry.grids)
    min_lon, min_lat, max_lon, max_lat = api.registry.bbox
    for feature in document["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert all(min_lon <= lon <= max_lon and min_lat <= lat <= max_lat for lon, lat in ring)  # [lon, lat]
        assert feature["id"] == feature["properties"]["grid_id"]
    by_id = {f["id"]: f for f in document["features"]}
    assert by_id[grid.grid_id]["properties"]["level"] == "orange"
    assert [tuple(p) for p in by_id[grid.grid_id]["geometry"]["coordinates"][0][:-1]] == list(grid.polygon)
    red_only = (await api.client.get("/v1/grids/risk?format=geojson&level=orange")).json()
    assert [f["id"] for f in red_only["features"]] == [grid.grid_id]
    assert red_only["summary"]["grids"] == 1


async def test_a_cluster_lifts_a_yellow_neighbour_and_a_lone_yellow_stays(api: Api) -> None:
    registry = api.registry
    # A yellow grid with three hot neighbours (two orange, one red), and a yellow grid far from them.
    centre = next(g for g in registry.grids if len(g.neighbours) == 4)
    hot = centre.neighbours[:3]
    near = {centre.grid_id, *centre.neighbours}
    near |= {n for g in centre.neighbours for n in registry.get(g).neighbours}  # type: ignore[union-attr]
    lone = next(g for g in reversed(registry.grids) if len(g.neighbours) == 4 and not near & {g.grid_id, *g.neighbours})
    risk.insert(
        api.writer,
        [_update(hot[0], 120.0, "orange"), _update(hot[1], 130.0, "orange"), _update(hot[2], 160.0, "red"),
         _update(centre.grid_id, 70.0, "yellow"), _update(lone.grid_id, 70.0, "yellow")],
    )  # fmt: skip

    body = RiskResponse.model_validate((await api.client.get("/v1/grids/risk")).json())
    by_id = {g.grid_id: g for g in body.grids}
    lifted, alone = by_id[centre.grid_id], by_id[lone.grid_id]
    # Gi of the centre (itself left out): the other 979 grids hold 120, 130, 160 and 70, mean 0.49, s 7.93;
    # its four neighbours sum to 410, so z = (410 − 4·0.49) / (7.93·sqrt((979·4 − 16)/978)) ≈ 25.8, far above
    # 1.96: 10 points per z would be ~238, capped at max_lift 50: 70 + 50 = 120, orange.
    assert (lifted.own_score, lifted.own_level, lifted.score, lifted.level) == (70.0, "yellow", 120.0, "orange")
    assert lifted.spatial is not None
    assert (lifted.spatial.hot_neighbours, lifted.spatial.lift) == (3, 50.0)
    assert 25.0 < lifted.spatial.gi_z < 26.5 and lifted.spatial.gi_star_z > 1.96
    # The lone yellow grid: quiet neighbours, a negative Gi, no lift.
    assert (alone.own_score, alone.score, alone.level) == (70.0, 70.0, "yellow")
    assert alone.spatial is not None
    assert (alone.spatial.hot_neighbours, alone.spatial.lift) == (0, 0.0) and alone.spatial.gi_z < 0
    # Quiet grids next to the cluster have no events of their own: not painted.
    quiet = [by_id[g] for g in centre.neighbours[3:]]
    assert [(g.level, g.score) for g in quiet] == [("green", 0.0)]
    assert body.summary.levels["yellow"] == 1  # counts the colours shown

    # Filters, hot spots and the grid's detail use the same lifted snapshot.
    yellow = RiskResponse.model_validate((await api.client.get("/v1/grids/risk?level=yellow")).json())
    assert [g.grid_id for g in yellow.grids] == [lone.grid_id]
    spots = HotspotsResponse.model_validate((await api.client.get("/v1/hotspots?limit=100")).json())
    ranked = {h.grid_id: h.score for h in spots.hotspots}
    assert ranked[centre.grid_id] == 120.0 and ranked[lone.grid_id] == 70.0
    detail = GridDetail.model_validate((await api.client.get(f"/v1/grids/{centre.grid_id}")).json())
    assert detail.risk == lifted


def _window(grid_id: str, start: datetime, events: int, score: float, level: str, version: int = 1) -> WindowRow:
    return WindowRow(
        grid_id, start, 300, events, float(events), {"call110": events}, {"call110/criminal": events}, score, level,
        "2026.1", version,
    )  # fmt: skip


async def test_history_groups_windows_by_step(api: Api) -> None:
    grid, other = api.registry.grids[3].grid_id, api.registry.grids[4].grid_id
    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    rows = [
        _window(grid, t0 + timedelta(minutes=5 * i), i + 1, 10.0 * i, "green" if i < 6 else "yellow") for i in range(12)
    ]
    rows += [
        _window(grid, t0 + timedelta(minutes=55), 99, 85.0, "red", version=2),  # replaces the last window
        _window(grid, t0 - timedelta(minutes=5), 50, 50.0, "yellow"),  # before start
        _window(grid, t0 + timedelta(hours=1), 50, 50.0, "yellow"),  # at end (exclusive)
        _window(other, t0, 70, 70.0, "orange"),
    ]
    windows.insert(api.writer, rows)
    params = {"start": t0.isoformat(), "end": (t0 + timedelta(hours=1)).isoformat(), "step": 900}
    response = await api.client.get(f"/v1/grids/{grid}/history", params=params)
    assert response.status_code == 200, response.text
    body = HistoryResponse.model_validate(response.json())
    assert (body.grid_id, body.step, body.start, body.end) == (grid, 900, t0, t0 + timedelta(hours=1))
    got = [(w.start, w.events, w.max_score, w.level, w.windows) for w in body.windows]
    assert got == [
        (t0, 1 + 2 + 3, 20.0, "green", 3),
        (t0 + timedelta(minutes=15), 4 + 5 + 6, 50.0, "green", 3),
        (t0 + timedelta(minutes=30), 7 + 8 + 9, 80.0, "yellow", 3),
        (t0 + timedelta(minutes=45), 10 + 11 + 99, 100.0, "red", 3),
    ]
    # The same instants written in Beijing time give the same answer.
    beijing = timezone(timedelta(hours=8))
    local = {
        **params,
        "start": t0.astimezone(beijing).isoformat(),
        "end": (t0 + timedelta(hours=1)).astimezone(beijing).isoformat(),
    }
    in_beijing = await api.client.get(f"/v1/grids/{grid}/history", params=local)
    assert in_beijing.json()["windows"] == response.json()["windows"]
    per_window = HistoryResponse.model_validate(
        (await api.client.get(f"/v1/grids/{grid}/history", params={**params, "step": 300})).json()
    )
    assert [w.events for w in per_window.windows] == [*range(1, 12), 99]

    # Defaults: the 24 h before the clock's now.
    default = HistoryResponse.model_validate((await api.client.get(f"/v1/grids/{grid}/history")).json())
    assert (default.end, default.step) == (NOW, 300)
    assert default.start == NOW - timedelta(hours=24)
    assert sum(w.events for w in default.windows) == sum(range(1, 12)) + 99 + 50 + 50


async def test_errors_share_one_body(api: Api) -> None:
    grid = api.registry.grids[0].grid_id
    history = f"/v1/grids/{grid}/history"
    start = "2026-11-23T09:00:00Z"
    assert "G-NOPE" in _error(await api.client.get("/v1/grids/G-NOPE/history"), 404, "not_found", "grid_id")
    _error(await api.client.get("/v1/grids/G-NOPE"), 404, "not_found", "grid_id")
    _error(await api.client.get("/v2/whatever"), 404, "not_found", None)
    for step in ("301", "0", "-300", "86700", "abc"):
        _error(await api.client.get(history, params={"step": step}), 422, "invalid_parameter", "step")
    assert "after" in _error(
        await api.client.get(history, params={"start": start, "end": start}), 422, "invalid_parameter", "end"
    )
    assert "31 days" in _error(
        await api.client.get(history, params={"start": "2026-10-01T00:00:00Z", "end": "2026-11-23T00:00:00Z"}),
        422, "invalid_parameter", "start",
    )  # fmt: skip
    assert "timezone" in _error(
        await api.client.get(history, params={"start": "2026-11-23T09:00:00"}), 422, "invalid_parameter", "start"
    )
    _error(await api.client.get(history, params={"end": "yesterday"}), 422, "invalid_parameter", "end")
    _error(await api.client.get("/v1/grids/risk?level=purple"), 422, "invalid_parameter", "level")
    _error(await api.client.get("/v1/grids/risk?format=kml"), 422, "invalid_parameter", "format")
    for limit in ("0", "101"):
        _error(await api.client.get(f"/v1/hotspots?limit={limit}"), 422, "invalid_parameter", "limit")
    _error(await api.client.get("/v1/dead-letters?limit=1001"), 422, "invalid_parameter", "limit")


async def test_hotspots_are_ordered_by_score_like_the_store(api_without_spatial: Api) -> None:
    # Grids 10-15 include neighbours (grids[12] has two hot ones): with the spatial term on, it would be lifted
    # and rank above the store's order (see test_a_cluster_lifts_a_yellow_neighbour_and_a_lone_yellow_stays).
    api = api_without_spatial
    grids = [g.grid_id for g in api.registry.grids[10:16]]
    scores = [55.0, 91.0, 55.0, 12.0, 0.0, 78.0]
    levels = ["yellow", "red", "yellow", "green", "green", "orange"]
    risk.insert(api.writer, [_update(g, s, lv) for g, s, lv in zip(grids, scores, levels, strict=True)])
    body = HotspotsResponse.model_validate((await api.client.get("/v1/hotspots", params={"limit": 4})).json())
    got = [(h.grid_id, h.score) for h in body.hotspots]
    assert got == [(grids[1], 91.0), (grids[5], 78.0), (grids[0], 55.0), (grids[2], 55.0)]
    assert [h.name for h in body.hotspots] == [api.registry.get(g).name for g, _ in got]  # type: ignore[union-attr]
    everything = HotspotsResponse.model_validate((await api.client.get("/v1/hotspots?limit=100")).json())
    assert [h.grid_id for h in everything.hotspots] == [r["grid_id"] for r in risk.hotspots(api.writer, 100)]
    assert len(everything.hotspots) == 5  # score 0 is never a hot spot


async def test_dead_letters_most_recent_first_with_long_raw_cut(api: Api) -> None:
    at = NOW - timedelta(minutes=10)
    letters = [
        dead_letters.DeadLetter("t.events", 0, 1, at, "bad_json", "", "not JSON", b"\x00\x01 nope"),
        dead_letters.DeadLetter("t.events", 0, 2, at + timedelta(seconds=1), "oversize", "", "too big", b"x" * 5000),
        dead_letters.DeadLetter(
            "t.events", 1, 3, at + timedelta(seconds=2), "missing_field", "severity", "required", b"{}"
        ),
    ]
    dead_letters.insert(api.writer, [dead_letters.row(letter, ingested_at=NOW) for letter in letters])
    body = DeadLettersResponse.model_validate((await api.client.get("/v1/dead-letters?limit=2")).json())
    assert [(d.offset, d.kind, d.field) for d in body.dead_letters] == [
        (3, "missing_field", "severity"),
        (2, "oversize", ""),
    ]
    assert body.dead_letters[1].raw_truncated and len(body.dead_letters[1].raw) == 2048
    assert not body.dead_letters[0].raw_truncated
    assert body.count_by_kind == {"bad_json": 1, "missing_field": 1, "oversize": 1}


class CountingExecutor:
    def __init__(self, inner: Executor, log: list[str]) -> None:
        self.inner, self.log = inner, log

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.log.append(sql)
        return self.inner.query(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.inner.insert(table, columns, rows)


def _count_queries(app: FastAPI) -> list[str]:
    log: list[str] = []

    # Built from the resources, not from get_executor: an override replaces sub-dependencies too.
    def counting(resources: ResourcesDep) -> Executor:
        return CountingExecutor(resources.storage.executor, log)

    app.dependency_overrides[get_executor] = counting
    return log


async def test_polls_are_served_from_memory_and_never_query_clickhouse(settings: Settings) -> None:
    async with running_api(settings, api_cache_seconds=3600) as cached:
        log = _count_queries(cached.app)
        responses = await asyncio.gather(*(cached.client.get("/v1/grids/risk") for _ in range(20)))
        responses.append(await cached.client.get("/v1/hotspots"))
        responses.append(await cached.client.get("/v1/grids/risk?format=geojson"))
        assert {r.status_code for r in responses} == {200}
        assert log == []  # twenty concurrent pollers and two more endpoints: no query at all
        first = responses[0].content
        assert all(r.content == first for r in responses[:20])
        # The lifespan's refresher read the table once, at start-up.
        assert cached.app.state.resources.snapshots.current is not None


async def test_the_background_refresher_picks_up_a_change_without_a_poll_querying(settings: Settings) -> None:
    async with running_api(settings, api_cache_seconds=0.2) as fresh:
        log = _count_queries(fresh.app)
        before = (await fresh.client.get("/v1/grids/risk")).json()["summary"]["version"]
        grid_id = fresh.registry.grids[0].grid_id
        risk.insert(fresh.writer, [_update(grid_id, 120.0, "orange")])
        deadline = time.monotonic() + 10
        while True:
            body = (await fresh.client.get("/v1/grids/risk")).json()
            if body["summary"]["version"] != before:
                break
            assert time.monotonic() < deadline, "the snapshot was not refreshed"
            await asyncio.sleep(0.1)
        assert body["grids"][0]["level"] == "orange"
        assert log == []


async def test_readyz_reports_broker_clickhouse_and_worker_lag(settings: Settings) -> None:
    settings = settings.model_copy(update={"worker_id": f"api-test-{uuid.uuid4().hex[:8]}"})
    await ensure_topics(settings)
    # One request per message: Tansu 0.6 reports a partition's end offset as the last batch's base offset
    # + 1, so a batched produce would show less lag than there is (real Kafka reports the true end).
    for i in range(10):
        await produce(settings, settings.topic_events, [(None, b"%d" % i)])
    async with running_api(settings) as api:
        body = Ready.model_validate((await api.client.get("/readyz")).json())
        assert body.checks.broker.ok and body.checks.clickhouse.ok and body.checks.clickhouse.version
        assert (body.checks.worker.status, body.checks.worker.lag) == ("not_consuming", 10)

        partitions = [TopicPartition(settings.topic_events, p) for p in range(settings.topic_partitions)]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=settings.worker_id, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            busiest = max(ends, key=lambda tp: ends[tp])
            await consumer.commit({busiest: ends[busiest]})
        finally:
            await consumer.stop()
        response = await api.client.get("/readyz")
        assert response.status_code == 200
        worker = Ready.model_validate(response.json()).checks.worker
        assert (worker.status, worker.lag) == ("ok", 10 - ends[busiest])
        assert worker.partitions is not None
        assert {p.partition: p.committed for p in worker.partitions}[busiest.partition] == ends[busiest]


async def test_readyz_is_503_naming_the_failed_check_and_never_hangs(settings: Settings) -> None:
    closed_broker = f"127.0.0.1:{free_port()}"
    async with running_api(settings, kafka_bootstrap=closed_broker) as api:
        response = await api.client.get("/readyz")
        assert "broker" in _error(response, 503, "not_ready", None)
        checks = NotReady.model_validate(response.json()).checks
        assert (checks.broker.ok, checks.clickhouse.ok, checks.worker.status) == (False, True, "unknown")

    # ClickHouse down at start-up: the API still starts, says why it is not ready, and data routes are 503.
    async with running_api(settings, kafka_bootstrap=closed_broker, clickhouse_port=free_port()) as api:
        started = time.monotonic()
        response = await api.client.get("/readyz")
        assert time.monotonic() - started < 5
        message = _error(response, 503, "not_ready", None)
        assert "broker" in message and "clickhouse" in message
        checks = NotReady.model_validate(response.json()).checks
        assert not checks.clickhouse.ok and checks.clickhouse.error
        _error(await api.client.get("/v1/grids/risk"), 503, "storage_unavailable", None)
        _error(await api.client.get("/v1/grids/G-NOPE/history"), 404, "not_found", "grid_id")  # no I/O needed
        assert (await api.client.get("/healthz")).json() == {"status": "alive"}


async def test_readyz_answers_in_time_when_the_broker_accepts_but_never_replies(settings: Settings) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the kernel; nothing ever answers them
        port = silent.getsockname()[1]
        async with running_api(settings, kafka_bootstrap=f"127.0.0.1:{port}") as api:
            started = time.monotonic()
            response = await api.client.get("/readyz")
            assert time.monotonic() - started < 4
            _error(response, 503, "not_ready", None)
            broker = NotReady.model_validate(response.json()).checks.broker
            assert not broker.ok and broker.error and "no answer" in broker.error
