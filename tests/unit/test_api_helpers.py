"""API helpers without services: parameters, the cache, per-thread executors, lag arithmetic, error bodies
and the OpenAPI document."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pingan.api.app import create_app
from pingan.api.errors import ApiError
from pingan.api.params import history_range, parse_levels
from pingan.api.readiness import partition_lag, worker_status
from pingan.api.storage import Storage, ThreadLocalExecutor
from pingan.errors import StorageError
from tests.support.defaults import default_settings

NOW = datetime(2026, 11, 23, 12, 7, 31, 250_000, tzinfo=UTC)


# --- parameters ------------------------------------------------------------------------------------------


def test_parse_levels() -> None:
    assert parse_levels(None) is None
    assert parse_levels(" ") is None
    assert parse_levels("red, Orange,,") == frozenset({"red", "orange"})
    with pytest.raises(ApiError) as caught:
        parse_levels("red,purple,blue")
    assert (caught.value.status, caught.value.field) == (422, "level")
    assert "blue, purple" in caught.value.message


def _range(start: datetime | None = None, end: datetime | None = None, step: int = 300) -> Any:
    return history_range(start, end, step, now=NOW, bucket_seconds=300)


def test_history_defaults_to_the_last_day_on_step_boundaries() -> None:
    span = _range()
    assert span.end == datetime(2026, 11, 23, 12, 7, 31, tzinfo=UTC)
    assert span.start == datetime(2026, 11, 22, 12, 5, tzinfo=UTC)
    assert _range(step=3600).start == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    explicit = _range(NOW - timedelta(hours=1), NOW, 900)
    assert (explicit.start, explicit.end, explicit.step) == (NOW - timedelta(hours=1), NOW, 900)


@pytest.mark.parametrize(
    ("start", "end", "step", "field"),
    [
        (None, None, 301, "step"),
        (None, None, 0, "step"),
        (None, None, -300, "step"),
        (None, None, 86_400 + 300, "step"),
        (NOW, NOW, 300, "end"),
        (NOW, NOW - timedelta(seconds=1), 300, "end"),
        (NOW - timedelta(days=31, seconds=1), NOW, 300, "start"),
    ],
)
def test_history_rejects(start: datetime | None, end: datetime | None, step: int, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        _range(start, end, step)
    assert (caught.value.status, caught.value.code, caught.value.field) == (422, "invalid_parameter", field)


def test_history_accepts_the_limits() -> None:
    assert _range(step=86_400).step == 86_400
    assert _range(NOW - timedelta(days=31), NOW).start == NOW - timedelta(days=31)


# --- per-thread executors and the schema gate -------------------------------------------------------------


class FakeClient:
    def __init__(self, log: list[str], down: list[bool] | None = None) -> None:
        self.log, self.down, self.closed, self.thread = log, down or [False], False, threading.get_ident()

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        assert threading.get_ident() == self.thread, "a client used from two threads"
        if self.down[0]:
            raise StorageError("connection refused")
        self.log.append(sql.split()[0])
        if "FROM schema_migrations" in sql:
            return []
        return [("26.9",)] if "version()" in sql else []

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.log.append(f"INSERT {table}")

    def close(self) -> None:
        self.closed = True


def test_thread_local_executor_gives_each_thread_its_own_client_and_closes_all() -> None:
    clients: list[FakeClient] = []

    def factory() -> FakeClient:
        clients.append(FakeClient([]))
        return clients[-1]

    executor = ThreadLocalExecutor(factory)
    executor.query("SELECT 1")
    executor.query("SELECT 1")
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: [executor.query("SELECT 1") for _ in range(5)], range(3)))
    assert 2 <= len(clients) <= 4 and executor.client_count == len(clients)
    executor.close()
    assert all(c.closed for c in clients)
    with pytest.raises(StorageError):
        executor.query("SELECT 1")


def test_storage_migrates_once_and_retries_after_a_pause(settings) -> None:
    log: list[str] = []
    down = [True]

    def factory() -> FakeClient:
        return FakeClient(log, down)

    storage = Storage(settings, factory=factory, server_factory=factory, retry_seconds=0.05)
    with pytest.raises(StorageError):
        storage.executor.query("SELECT 1")
    down[0] = False
    with pytest.raises(StorageError):  # within retry_seconds: no new attempt
        storage.ensure_schema()
    assert log == []
    time.sleep(0.06)
    storage.executor.query("SELECT 1")
    assert storage.schema_ready
    assert log.count("CREATE") >= 2  # database + ledger (+ tables)
    before = len(log)
    storage.executor.query("SELECT 2")
    assert log[before:] == ["SELECT"]  # migrated once
    assert storage.server_version() == "26.9"
    storage.close()


# --- readiness arithmetic --------------------------------------------------------------------------------


def test_partition_lag() -> None:
    assert partition_lag(committed=40, begin=0, end=100) == 60
    assert partition_lag(committed=None, begin=10, end=100) == 90  # never committed: from the log start
    assert partition_lag(committed=5, begin=10, end=100) == 90  # committed offset already deleted
    assert partition_lag(committed=120, begin=0, end=100) == 0


def test_worker_status() -> None:
    assert worker_status(None, False) == "unknown"
    assert worker_status(0, False) == "idle"
    assert worker_status(5, False) == "not_consuming"
    assert worker_status(5, True) == "ok"
    assert worker_status(100_001, True) == "lagging"


# --- the app without its lifespan: no I/O at construction --------------------------------------------------


async def test_app_builds_without_services_and_answers_liveness_and_errors() -> None:
    settings = default_settings(clickhouse_port=1, kafka_bootstrap="127.0.0.1:1")
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/healthz")).json() == {"status": "alive"}
        missing = await client.get("/nowhere")
        assert missing.headers["content-type"] == "application/problem+json"
        assert (missing.status_code, missing.json()) == (404, {
            "type": "urn:pingan:problem:not_found", "title": "Not found", "status": 404, "detail": "Not Found",
            "code": "not_found", "error": {"code": "not_found", "message": "Not Found"}})  # fmt: skip
        wrong = await client.post("/healthz")
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")
        # A handler needing the lifespan's resources fails with the generic body, no traceback.
        broken = await client.get("/v1/grids")
        assert (broken.status_code, broken.json()["detail"], broken.json()["error"]) == (
            500, "internal error", {"code": "internal", "message": "internal error"},
        )  # fmt: skip


def test_openapi_documents_every_route_and_the_geojson_schema(settings) -> None:
    schema = create_app(settings).openapi()
    paths = schema["paths"]
    expected = {"/v1/grids/risk", "/v1/grids/{grid_id}/history", "/v1/hotspots", "/v1/dead-letters", "/v1/grids",
                "/v1/grids/{grid_id}", "/healthz", "/readyz"}  # fmt: skip
    assert expected <= set(paths)
    risk = paths["/v1/grids/risk"]["get"]["responses"]
    assert risk["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RiskResponse"}
    assert risk["200"]["content"]["application/geo+json"]["schema"]["$ref"].endswith("/RiskFeatureCollection")
    components = schema["components"]["schemas"]
    assert {"RiskFeatureCollection", "RiskFeature", "PolygonGeometry", "ErrorBody", "HistoryResponse"} <= set(
        components
    )
    assert "examples" in components["GridRisk"]
    history = paths["/v1/grids/{grid_id}/history"]["get"]["responses"]
    assert {"200", "404", "422", "503"} <= set(history)
    not_ready = paths["/readyz"]["get"]["responses"]["503"]["content"]["application/problem+json"]["schema"]
    assert not_ready["$ref"].endswith("NotReady")
    # every error of the query API is documented as a problem document
    problem_ref = {"$ref": "#/components/schemas/ErrorBody"}
    assert history["422"]["content"] == {"application/problem+json": {"schema": problem_ref}}
    assert {"401", "403", "500"} <= set(history)
