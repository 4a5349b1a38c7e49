"""The roll-up and published-index routes against the real ClickHouse (in-process ASGI with the lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pingan.api.app import create_app
from pingan.api.deps import ResourcesDep, get_executor
from pingan.api.index_models import FlaggedResponse, IndexResponse, UnitRiskDetail, UnitsRiskResponse
from pingan.api.models import ErrorBody
from pingan.clock import FixedClock
from pingan.index.records import RiskUpdate
from pingan.publishing import publish
from pingan.settings import Settings
from pingan.store import risk
from pingan.store.client import Executor, connect
from tests.support import small_city
from tests.support.small_city import CONFIG, DAY1, DAY2, REGISTRY

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
AS_OF = datetime(2026, 11, 24, 0, 55, tzinfo=UTC)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    writer: Executor


@asynccontextmanager
async def running_api(settings: Settings, **overrides: Any) -> AsyncIterator[Api]:
    settings = settings.model_copy(update=overrides)
    app = create_app(settings, registry=REGISTRY, clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        writer = connect(settings)  # the lifespan has created the database and applied migrations
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield Api(app, client, writer)
        finally:
            writer.close()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings, api_cache_seconds=0) as running:
        yield running


def _update(grid_id: str, score: float, level: str, minutes_ago: int = 0) -> RiskUpdate:
    return RiskUpdate(
        grid_id, AS_OF - timedelta(minutes=minutes_ago), score, level, "", 5, "call110", {"call110": score}, "v1", 1
    )


def _error(response: httpx.Response, status: int, code: str, field: str | None) -> str:
    assert response.status_code == status, response.text
    body = ErrorBody.model_validate(response.json())
    assert (body.error.code, body.error.field) == (code, field), response.text
    return body.error.message


async def test_unit_risk_is_rolled_up_live_from_the_grid_map(api: Api) -> None:
    risk.insert(
        api.writer, [_update("G3", 120.0, "orange", 10), _update("G4", 30.0, "green"), _update("G5", 160.0, "red", 5)]
    )
    response = await api.client.get("/v1/units/community/risk")
    assert response.status_code == 200, response.text
    body = UnitsRiskResponse.model_validate(response.json())
    assert body.unit_level == "community"
    got = [(u.unit_id, u.level, u.weighted_score, u.worst_score, u.grids, u.population) for u in body.units]
    assert got == [
        ("C1", "green", 0.0, 0.0, 1, 10_000),
        ("C2", "green", 0.0, 0.0, 1, 10_000),
        ("C3", "orange", 75.0, 120.0, 2, 10_000),  # (5,000 x 120 + 5,000 x 30) / 10,000
        ("C4", "red", 160.0, 160.0, 1, 10_000),
    ]
    assert body.summary.levels == {"green": 2, "yellow": 0, "orange": 1, "red": 1}
    assert (body.summary.units, body.summary.as_of, body.summary.fetched_at) == (4, AS_OF, NOW)
    c3 = body.units[2]
    assert [(t.grid_id, t.score) for t in c3.top_grids] == [("G3", 120.0), ("G4", 30.0)]
    assert (c3.name, c3.parent_id, c3.levels["orange"]) == ("三社区", "S", 1)

    stations = UnitsRiskResponse.model_validate((await api.client.get("/v1/units/police_station/risk")).json())
    # P1 = G1, G2 (quiet), G3 (5,000 x 120): 600,000 / 25,000 = 24.0; P2 = G4, G5: (150,000 + 1,600,000) / 15,000
    assert [(u.unit_id, u.level, u.weighted_score) for u in stations.units] == [
        ("P1", "orange", 24.0), ("P2", "red", 116.7),
    ]  # fmt: skip
    district = UnitsRiskResponse.model_validate((await api.client.get("/v1/units/district/risk")).json())
    assert [(u.unit_id, u.level, u.worst_score) for u in district.units] == [("D", "red", 160.0)]

    detail = await api.client.get("/v1/units/community/C3/risk")
    assert detail.status_code == 200, detail.text
    one = UnitRiskDetail.model_validate(detail.json())
    assert (one.unit_id, one.level, one.weighted_score, one.fetched_at) == ("C3", "orange", 75.0, NOW)
    assert [(g.grid_id, g.level, g.score) for g in one.grid_risks] == [("G3", "orange", 120.0), ("G4", "green", 30.0)]
    assert one.model_dump(exclude={"fetched_at", "grid_risks"}) == c3.model_dump()

    assert "P1" in _error(await api.client.get("/v1/units/community/P1/risk"), 404, "not_found", "unit_id")
    _error(await api.client.get("/v1/units/community/NOPE/risk"), 404, "not_found", "unit_id")
    _error(await api.client.get("/v1/units/province/risk"), 422, "invalid_parameter", "level")
    _error(await api.client.get("/v1/units/province/C1/risk"), 422, "invalid_parameter", "level")


class CountingExecutor:
    def __init__(self, inner: Executor, log: list[str]) -> None:
        self.inner, self.log = inner, log

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.log.append(sql)
        return self.inner.query(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.inner.insert(table, columns, rows)


async def test_unit_risk_shares_the_grid_risk_cache(settings: Settings) -> None:
    async with running_api(settings, api_cache_seconds=3600) as cached:
        log: list[str] = []

        def counting(resources: ResourcesDep) -> Executor:
            return CountingExecutor(resources.storage.executor, log)

        cached.app.dependency_overrides[get_executor] = counting
        paths = ["/v1/grids/risk", "/v1/units/community/risk", "/v1/units/police_station/risk",
                 "/v1/units/community/risk", "/v1/units/district/D/risk"]  # fmt: skip
        responses = [await cached.client.get(path) for path in paths]
        assert [r.status_code for r in responses] == [200] * len(paths)
        assert log == []  # the map and every roll-up come from the snapshot in memory
        assert responses[1].content == responses[3].content


async def test_published_index_ranking_and_flagged(api: Api) -> None:
    small_city.insert_two_days(api.writer)
    for day in (DAY1, DAY2):
        publish(api.writer, REGISTRY, CONFIG, "day", day, now=NOW)

    response = await api.client.get("/v1/index/day", params={"unit": "community", "date": "2026-11-23"})
    assert response.status_code == 200, response.text
    body = IndexResponse.model_validate(response.json())
    assert (body.period_kind, body.period_start, body.period_end, body.unit_level) == (
        "day", DAY2, date(2026, 11, 24), "community",
    )  # fmt: skip
    assert (body.timezone, body.config_version) == ("Asia/Shanghai", "small-city-1")
    ranking = [(u.unit_id, u.rank, u.score, u.change, u.rank_change, u.flagged, u.flag_change) for u in body.units]
    assert ranking == [
        ("C2", 1, 100.0, 6.7, 1, False, ""),
        ("C1", 2, 96.7, 23.4, 2, False, "left"),
        ("C4", 3, 86.7, -6.6, -1, False, ""),
        ("C3", 4, 66.7, -33.3, -3, True, "entered"),
    ]
    # No date: the newest published day; any unit level defaults to communities.
    assert (await api.client.get("/v1/index/day")).json() == response.json()
    earlier = IndexResponse.model_validate((await api.client.get("/v1/index/day?date=2026-11-22")).json())
    assert [(u.unit_id, u.score) for u in earlier.units][-1] == ("C1", 73.3)

    flagged = FlaggedResponse.model_validate((await api.client.get("/v1/index/day/flagged?date=2026-11-23")).json())
    assert ([u.unit_id for u in flagged.entered], [u.unit_id for u in flagged.left], flagged.still) == (
        ["C3"], ["C1"], [],
    )  # fmt: skip
    assert flagged.entered[0].previous_score == 100.0
    stations = FlaggedResponse.model_validate(
        (await api.client.get("/v1/index/day/flagged", params={"unit": "police_station"})).json()
    )
    assert ([u.unit_id for u in stations.entered], [u.unit_id for u in stations.left]) == (["P2"], ["P1"])
    day1 = FlaggedResponse.model_validate((await api.client.get("/v1/index/day/flagged?date=2026-11-22")).json())
    assert ([u.unit_id for u in day1.entered], day1.left, day1.still) == (["C1"], [], [])

    message = _error(await api.client.get("/v1/index/week", params={"date": "2026-11-23"}), 404, "not_found", "date")
    assert "pingan publish --period week --date 2026-11-23" in message
    _error(await api.client.get("/v1/index/month/flagged"), 404, "not_found", None)
    _error(await api.client.get("/v1/index/day?unit=subdistrict"), 404, "not_found", None)
    _error(await api.client.get("/v1/index/year"), 422, "invalid_parameter", "period")
    _error(await api.client.get("/v1/index/day?unit=grid"), 422, "invalid_parameter", "unit")
    _error(await api.client.get("/v1/index/day?date=23-11-2026"), 422, "invalid_parameter", "date")
