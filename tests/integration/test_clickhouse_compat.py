"""The schema and every statement the store and the API run work on ClickHouse 18.16 (the local server) and
on the current engine (chdb), with the same results.

Production runs a current ClickHouse; the only server installable here is 18.16. chdb embeds the current
engine in-process, so each statement is checked in both dialects without a second server.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from chdb.session import Session

import pingan.store.migrate as migrate_module
from pingan.api.app import create_app
from pingan.api.deps import ResourcesDep, get_executor
from pingan.baselines import learn_snapshot
from pingan.cli_index import rollup_snapshot
from pingan.clock import FixedClock
from pingan.dead_letter import DeadLetter
from pingan.errors import InvalidEvent
from pingan.grids import Grid, GridRegistry, ring_area_centroid
from pingan.index.alerts import alert_for, encode_cursor
from pingan.index.baseline import BaselineModel, GridProfile
from pingan.index.published import period_containing
from pingan.index.records import RiskUpdate, WindowRow
from pingan.publishing import publish
from pingan.schemas.envelope import Event
from pingan.settings import Settings
from pingan.store import alerts, baselines, dead_letters, events, grid_units, published, risk, server, units, windows
from pingan.store.client import DriverExecutor, Executor, connect
from pingan.store.migrate import load_migrations, migrate
from tests.support import small_city
from tests.support.chdb_executor import ChdbExecutor
from tests.support.defaults import shipped_index

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # first window of the sample history
TABLES = [
    "alert_actions", "alerts", "baseline_cells", "baseline_grids", "baselines", "dead_letters", "events", "grid_units",
    "grid_windows", "log_losses",
    "published_index", "risk_latest", "risk_updates", "schema_migrations", "unit_risk",
]  # fmt: skip


@pytest.fixture
def chdb_executor(chdb_session: Session) -> ChdbExecutor:
    return ChdbExecutor(chdb_session, database=f"compat_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["clickhouse-18.16", "chdb"])
def engine(request: pytest.FixtureRequest) -> Executor:
    name = "server_executor" if request.param == "clickhouse-18.16" else "chdb_executor"
    return request.getfixturevalue(name)


# --- representative rows: unicode, quotes, NULLs, replayed duplicates, replaced versions ----------------


def _event(event_id: str, source: str, grid_id: str, minute: int, *, lon: float | None = 103.6) -> Event:
    at = T0 + timedelta(minutes=minute, milliseconds=250)
    return Event(
        event_id=event_id, source=source, type="criminal" if source == "call110" else "crowd", severity=3,
        event_time=at, receive_time=at + timedelta(seconds=2), grid_id=grid_id, lon=lon,
        lat=None if lon is None else 31.0, device_id="cam-7" if source == "camera" else "",
        schema_version=1, payload_json='{"text":"打架 \\"quoted\\" \'single\'\\nline"}',
    )  # fmt: skip


def _window(grid_id: str, minute: int, n: int, score: float, level: str, version: int) -> WindowRow:
    return WindowRow(
        grid_id=grid_id, window_start=T0 + timedelta(minutes=minute), window_seconds=300, events=n,
        weighted=round(n * 1.5, 3), source_counts={"call110": n - 1, "camera": 1},
        type_counts={"call110/criminal": n - 1, "camera/crowd": 1}, score=score, level=level,
        config_version="2026.1", version=version,
    )  # fmt: skip


def _risk(grid_id: str, score: float, level: str, version: int, previous: str = "") -> RiskUpdate:
    return RiskUpdate(
        grid_id, NOW - timedelta(minutes=5), score, level, previous, 7, "call110" if score else "", {}, "2026.1",
        version,
    )  # fmt: skip


def _letter(offset: int, kind: str, raw: bytes) -> tuple[Any, ...]:
    letter = dead_letters.DeadLetter(
        "t.events", 1, offset, T0 + timedelta(seconds=offset), kind, "payload.text" if kind != "bad_json" else "",
        f"reason for {kind}", raw,
    )  # fmt: skip
    return dead_letters.row(letter, ingested_at=NOW)


FILE_LETTERS = [
    DeadLetter.of(InvalidEvent("unknown_place", "not in the place table", "address"),
                  '{"address": "和平街3号"}'.encode(), origin=f"file:/x.jsonl@{offset}",
                  received_at=T0 - timedelta(hours=1, seconds=offset),
                  source="tailer", feed="electrical_fire", adapter="pingan.producers.adapters.device:map_record")
    for offset in (42, 99)
] + [
    DeadLetter.of(InvalidEvent("oversize", "too big"), b"x" * 100, origin="http:cad/r1#3", max_bytes=10,
                  received_at=T0 - timedelta(hours=2), source="gateway", feed="call110"),
]  # fmt: skip


def _load_feed_letters(executor: Executor) -> None:
    """Dead letters of other ways in (migration 0009's columns), one of them marked replayed."""
    dead_letters.insert(executor, [dead_letters.row(letter, ingested_at=NOW) for letter in FILE_LETTERS])
    stored = dead_letters.find(executor, "file:/x.jsonl", 0, 42)
    assert stored is not None
    dead_letters.mark_replayed(executor, stored, at=NOW, event_id="electrical-fire-EF-0999-A7")


def load_sample(executor: Executor) -> None:
    ingested = NOW
    sample_events = [
        _event("e-1", "call110", "G0001", 1),
        _event("e-2", "call110", "G0001", 7),
        _event("e-3", "camera", "G0002", 3, lon=None),
    ]
    rows = [events.row(e, partition=0, offset=i, late=False, ingested_at=ingested) for i, e in enumerate(sample_events)]
    # a redelivered copy of e-1: a second row, still one distinct event
    rows.append(events.row(sample_events[0], partition=0, offset=9, late=True, ingested_at=ingested))
    events.insert(executor, rows)
    dead_letters.insert(
        executor,
        [
            _letter(1, "bad_json", b"\x00\x01 not json"),
            _letter(2, "missing_field", b'{"a": "it\'s \\\\ back\\nslash"}'),
            _letter(3, "missing_field", '{"text": "无效"}'.encode()),
        ],
    )
    windows.insert(
        executor,
        [
            _window("G0001", 0, 3, 40.0, "yellow", 1),
            _window("G0001", 0, 4, 55.0, "orange", 2),  # replaces version 1 of the same window
            _window("G0001", 5, 2, 30.0, "green", 1),
            _window("G0001", 20, 6, 81.5, "red", 1),
            _window("G0001", 75, 1, 10.0, "green", 1),
            _window("G0002", 5, 9, 90.0, "red", 1),
        ],
    )
    risk.insert(executor, [_risk("G0001", 50.0, "yellow", 1), _risk("G0002", 88.0, "red", 1, "orange")])
    risk.insert(executor, [_risk("G0001", 72.0, "orange", 2, "yellow"), _risk("G0003", 0.0, "green", 1)])
    at = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    raised = [
        alert_for(grid, before, after, score, at, version, {"top_types": []}, "v1")
        for grid, before, after, score, version in [
            ("G0002", "yellow", "red", 160.0, 5), ("G0001", "", "orange", 110.0, 5), ("G0002", "red", "green", 0.0, 9),
        ]
    ]  # fmt: skip
    alerts.insert(executor, [a for a in raised if a is not None])
    _load_feed_letters(executor)
    load_index_sample(executor)
    learn_snapshot(executor, shipped_index(), now=NOW, weeks=1)


def run_store_reads(executor: Executor) -> dict[str, Any]:
    """Every read in pingan.store, with the arguments the API and the tests use."""
    return {
        "risk.latest": risk.latest(executor),
        "risk.hotspots": risk.hotspots(executor, 10),
        "risk.hotspots.1": risk.hotspots(executor, 1),
        "risk.explanation": risk.explanation(executor, "G0001"),
        "risk.explanation.none": risk.explanation(executor, "G0404"),
        "alerts.after": alerts.after(executor, None),
        "alerts.after.cursor": alerts.after(executor, encode_cursor(5, "G0001")),
        "alerts.newest": alerts.newest(executor, 2),
        "windows.history.300": windows.history(executor, "G0001", T0, T0 + timedelta(hours=3), 300),
        "windows.history.900": windows.history(executor, "G0001", T0, T0 + timedelta(hours=3), 900),
        "windows.history.3600.partial": windows.history(executor, "G0001", T0 + timedelta(minutes=5), NOW, 3600),
        "windows.history.empty": windows.history(executor, "G0404", T0, NOW, 300),
        "dead_letters.recent": dead_letters.recent(executor, limit=2),
        "dead_letters.count_by_kind": dead_letters.count_by_kind(executor),
        "dead_letters.recent.tailer": dead_letters.recent(executor, source="tailer"),
        "dead_letters.recent.filtered": dead_letters.recent(
            executor,
            feed="electrical_fire",
            kind="unknown_place",
            since=T0 - timedelta(hours=3),
            until=T0,
            replayed=False,
        ),
        "dead_letters.recent.replayed": dead_letters.recent(executor, replayed=True),
        "dead_letters.find": dead_letters.find(executor, "http:cad/r1", 0, 3),
        "dead_letters.find.none": dead_letters.find(executor, "http:cad/r1", 0, 4),
        "dead_letters.existing_origins": dead_letters.existing_origins(
            executor,
            [
                *FILE_LETTERS,
                dead_letters.DeadLetter("t.events", 1, 3, NOW, "k", "", "r", b""),
                dead_letters.DeadLetter("t.events", 1, 77, NOW, "k", "", "r", b""),
            ],
        ),
        "dead_letters.count_by_feed_and_kind": dead_letters.count_by_feed_and_kind(executor),
        "events.count_by_source": events.count_by_source(executor),
        "events.count_distinct": events.count_distinct(executor),
        "events.count_distinct.camera": events.count_distinct(executor, source="camera"),
        "events.count_rows": events.count_rows(executor),
        "schema_migrations": executor.query("SELECT version FROM schema_migrations FINAL ORDER BY version"),
    }


def test_migrations_apply_and_are_idempotent(engine: Executor) -> None:
    expected = [m.version for m in load_migrations()]
    assert migrate(engine) == expected
    assert migrate(engine) == []
    tables = engine.query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
    assert [t[0] for t in tables] == TABLES
    assert server.version(engine)


def test_store_writes_and_reads_agree_on_both_engines(
    server_executor: DriverExecutor, chdb_executor: ChdbExecutor
) -> None:
    results = {}
    for name, executor in (("18.16", server_executor), ("chdb", chdb_executor)):
        migrate(executor)
        load_sample(executor)
        results[name] = run_store_reads(executor)
    # Stored rows before merges are engine-specific: current ClickHouse applies ReplacingMergeTree to each
    # insert block (optimize_on_insert), so the redelivered copy inserted with its original is gone at
    # once; 18.16 keeps it until a merge. Exact reads use FINAL or uniqExact and agree.
    assert (results["18.16"].pop("events.count_rows"), results["chdb"].pop("events.count_rows")) == (4, 3)
    for read in results["18.16"]:
        assert results["18.16"][read] == results["chdb"][read], read

    # Equal is not enough: check the values are the right ones.
    got = results["chdb"]
    assert [(r["grid_id"], r["level"], r["score"]) for r in got["risk.latest"]] == [
        ("G0001", "orange", 72.0), ("G0002", "red", 88.0), ("G0003", "green", 0.0),
    ]  # fmt: skip
    assert got["risk.latest"][0]["as_of"] == NOW - timedelta(minutes=5)
    assert [r["grid_id"] for r in got["risk.hotspots"]] == ["G0002", "G0001"]
    assert [r["grid_id"] for r in got["risk.hotspots.1"]] == ["G0002"]
    assert got["risk.explanation"]["config_version"] == "2026.1" and got["risk.explanation.none"] is None
    assert [(a["grid_id"], a["kind"]) for a in got["alerts.after"]] == [
        ("G0001", "escalation"), ("G0002", "escalation"), ("G0002", "de-escalation"),
    ]  # fmt: skip
    assert [a["alert_id"] for a in got["alerts.after.cursor"]] == ["G0002:5", "G0002:9"]
    steps = [(p["start"], p["events"], p["max_score"], p["level"], p["windows"]) for p in got["windows.history.900"]]
    assert steps == [
        (T0, 6, 55.0, "orange", 2),
        (T0 + timedelta(minutes=15), 6, 81.5, "red", 1),
        (T0 + timedelta(minutes=75), 1, 10.0, "green", 1),
    ]  # fmt: skip
    assert [p["events"] for p in got["windows.history.300"]] == [4, 2, 6, 1]
    assert [(p["start"], p["events"]) for p in got["windows.history.3600.partial"]] == [
        (T0, 8),
        (T0 + timedelta(hours=1), 1),
    ]
    assert got["windows.history.empty"] == []
    assert [d["offset"] for d in got["dead_letters.recent"]] == [3, 2]
    assert got["dead_letters.recent"][0]["raw"] == '{"text": "无效"}'
    assert got["dead_letters.recent"][1]["raw"] == '{"a": "it\'s \\\\ back\\nslash"}'
    assert got["dead_letters.count_by_kind"] == {"bad_json": 1, "missing_field": 2, "oversize": 1, "unknown_place": 2}
    assert [r["origin"] for r in got["dead_letters.recent.tailer"]] == ["file:/x.jsonl@42", "file:/x.jsonl@99"]
    assert [r["origin"] for r in got["dead_letters.recent.filtered"]] == ["file:/x.jsonl@99"]
    [replayed] = got["dead_letters.recent.replayed"]
    assert (replayed["origin"], replayed["replayed_as"], replayed["replayed_at"]) == (
        "file:/x.jsonl@42", "electrical-fire-EF-0999-A7", NOW
    )  # fmt: skip
    assert replayed["raw"] == '{"address": "和平街3号"}' and replayed["ingested_at"] == NOW + timedelta(seconds=1)
    found = got["dead_letters.find"]
    assert (found["source"], found["feed"], found["raw"], found["raw_size"], found["origin"]) == (
        "gateway", "call110", "x" * 10, 100, "http:cad/r1#3"
    )  # fmt: skip
    assert found.letter().truncated and got["dead_letters.find.none"] is None
    assert got["dead_letters.existing_origins"] == {
        ("file:/x.jsonl", 0, 42), ("file:/x.jsonl", 0, 99), ("http:cad/r1", 0, 3), ("t.events", 1, 3)
    }  # fmt: skip
    assert [(f, k, n) for f, k, n, _ in got["dead_letters.count_by_feed_and_kind"]] == [
        ("", "bad_json", 1), ("", "missing_field", 2), ("call110", "oversize", 1),
        ("electrical_fire", "unknown_place", 2),
    ]  # fmt: skip
    assert [(s, n) for s, n, _ in got["events.count_by_source"]] == [("call110", 2), ("camera", 1)]
    assert (got["events.count_distinct"], got["events.count_distinct.camera"]) == (3, 1)


# --- every statement the API itself issues -------------------------------------------------------------


class RecordingExecutor:
    """Passes statements through and keeps each with its parameters and result."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.statements: list[tuple[str, dict[str, Any], list[tuple[Any, ...]]]] = []

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        rows = self.inner.query(sql, params)
        self.statements.append((sql, dict(params or {}), rows))
        return rows

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        raise AssertionError("the API never writes")


def _square_grid(grid_id: str, index: int) -> Grid:
    lon, lat = 103.6 + index * 0.01, 31.0
    ring = ((lon, lat), (lon + 0.01, lat), (lon + 0.01, lat + 0.01), (lon, lat + 0.01))
    area, centroid = ring_area_centroid(ring)
    return Grid(grid_id, f"网格{index}", "urban", 500, 180, "D01", "S01", "C01", "P01", ring, centroid,
                (lon, lat, lon + 0.01, lat + 0.01), area)  # fmt: skip


async def test_every_api_query_runs_on_both_engines(settings: Settings, chdb_executor: ChdbExecutor) -> None:
    registry = GridRegistry([_square_grid(f"G000{i}", i) for i in range(1, 5)])
    # No escalation alerts written while the queries run: the server's rows must stay those chdb replays.
    settings = settings.model_copy(update={"incident_check_seconds": 0})
    app = create_app(settings, registry=registry, clock=FixedClock(NOW))
    recorders: list[RecordingExecutor] = []

    # Built from the resources, not from get_executor itself: an override also replaces sub-dependencies.
    def recording(resources: ResourcesDep) -> Executor:
        recorder = RecordingExecutor(resources.storage.executor)
        recorders.append(recorder)
        return recorder

    app.dependency_overrides[get_executor] = recording
    async with app.router.lifespan_context(app):
        writer = connect(settings)
        try:
            load_sample(writer)
        finally:
            writer.close()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            start, end = T0.isoformat(), (T0 + timedelta(hours=3)).isoformat()
            visited = {
                "/v1/grids/risk": await client.get("/v1/grids/risk"),
                "/v1/grids/risk?format=geojson": await client.get("/v1/grids/risk", params={"format": "geojson"}),
                "/v1/hotspots": await client.get("/v1/hotspots"),
                "/v1/grids": await client.get("/v1/grids"),
                "/v1/grids/{grid_id}": await client.get("/v1/grids/G0001"),
                "/v1/grids/{grid_id}/baseline": await client.get("/v1/grids/G0001/baseline"),
                "/v1/grids/{grid_id}/history": await client.get(
                    "/v1/grids/G0001/history", params={"start": start, "end": end, "step": 900}
                ),
                "/v1/dead-letters": await client.get("/v1/dead-letters"),
                "/readyz": await client.get("/readyz"),
                "/v1/units/{level}/risk": await client.get("/v1/units/community/risk"),
                "/v1/units/{level}/{unit_id}/risk": await client.get("/v1/units/police_station/P01/risk"),
                "/v1/index/{period}": await client.get("/v1/index/day", params={"date": "2026-11-23"}),
                "/v1/index/{period}/flagged": await client.get("/v1/index/day/flagged"),
                "/v1/alerts": await client.get("/v1/alerts"),
                "/v1/feeds": await client.get("/v1/feeds"),
                "/v1/incidents": await client.get("/v1/incidents"),
                "/v1/incidents/handling": await client.get(
                    "/v1/incidents/handling", params={"start": start, "end": end}
                ),
            }
            first_alert = visited["/v1/alerts"].json()["alerts"][0]["alert_id"]
            visited["/v1/alerts/{alert_id}"] = await client.get(f"/v1/alerts/{first_alert}")
    assert {path: r.status_code for path, r in visited.items() if r.status_code != 200} == {}
    # Every data route of the app was called (a new route must be added above). Not ClickHouse readers: the
    # ingest gateway and webhooks (write to Kafka), the alert stream (the same query as /v1/alerts, in a loop)
    # and the grid shapes (the registry only).
    # /v1/me reads the keys only; the actions route writes (tests/integration/test_incidents_sql.py checks the
    # incident queries on both engines).
    not_readers = {"/v1/alerts/stream", "/v1/grids/shapes", "/v1/me", "/v1/alerts/{alert_id}/actions"}
    routes = {
        p for p in app.openapi()["paths"] if p.startswith("/v1/") and not p.startswith(("/v1/ingest/", "/v1/webhooks/"))
    }
    assert routes - not_readers <= {path.split("?")[0] for path in visited}

    statements = [s for recorder in recorders for s in recorder.statements]
    assert len({sql for sql, _, _ in statements}) >= 4  # risk.latest, history, recent, count_by_kind
    migrate(chdb_executor)
    load_sample(chdb_executor)
    for sql, params, rows in statements:
        assert chdb_executor.query(sql, params) == rows, sql


# --- roll-ups and the published index (pingan.index.rollup, pingan.index.published) ---------------------------


def load_index_sample(executor: Executor) -> None:
    """A roll-up snapshot and a published day over the sample above, for the API routes that read them."""
    registry = GridRegistry([_square_grid(f"G000{i}", i) for i in range(1, 5)])
    rollup_snapshot(executor, registry, now=NOW)
    publish(executor, registry, small_city.CONFIG, "day", T0.date(), now=NOW)


def run_index_work(executor: Executor) -> dict[str, Any]:
    """Every write and read of the roll-ups and the published index, on the small city's two days."""
    migrate(executor)
    small_city.insert_two_days(executor)
    risk.insert(executor, [_risk("G3", 120.0, "orange", 1), _risk("G5", 60.0, "yellow", 1)])
    results: dict[str, Any] = {"rollup": rollup_snapshot(executor, small_city.REGISTRY, now=NOW).units}
    for kind, day in (("day", small_city.DAY1), ("day", small_city.DAY2), ("week", small_city.DAY2),
                      ("month", small_city.DAY2)):  # fmt: skip
        results[f"publish.{kind}.{day}"] = publish(executor, small_city.REGISTRY, small_city.CONFIG, kind, day, now=NOW)
    day2 = period_containing("day", small_city.DAY2)
    zone = small_city.CONFIG.zone
    sources = small_city.CONFIG.counted_sources
    (both_start, _), (_, both_end) = day2.previous().utc_bounds(zone), day2.utc_bounds(zone)
    return {
        **results,
        "grid_units.content": grid_units.content(executor),
        "published.units.community": published.units(executor, "community"),
        "published.units.police_station": published.units(executor, "police_station"),
        "published.district_populations": published.district_populations(executor),
        "published.unit_counts": published.unit_counts(executor, "community", sources, *day2.utc_bounds(zone)),
        "published.district_daily_counts": published.district_daily_counts(
            executor, sources, both_start, both_end, "Asia/Shanghai"
        ),
        "published.read.day": published.read(executor, "day", "community", small_city.DAY2),
        "published.read.week.police": published.read(executor, "week", "police_station", small_city.DAY2),
        "published.read.month": published.read(executor, "month", "community", date(2026, 11, 1)),
        "published.latest.day": published.latest_period_start(executor, "day", "community"),
        "published.latest.none": published.latest_period_start(executor, "day", "subdistrict"),
        "units.latest_snapshot": units.latest_snapshot(executor, "community"),
        "units.history": units.history(executor, "community", "C3", NOW - timedelta(hours=1), NOW),
    }


def test_index_tables_and_queries_agree_on_both_engines(
    server_executor: DriverExecutor, chdb_executor: ChdbExecutor
) -> None:
    results = {name: run_index_work(executor) for name, executor in (("18.16", server_executor),
                                                                     ("chdb", chdb_executor))}  # fmt: skip
    for key in results["18.16"]:
        assert results["18.16"][key] == results["chdb"][key], key

    got = results["chdb"]
    day = [(r["unit_id"], r["rank"], r["score"], r["change"], r["flag_change"]) for r in got["published.read.day"]]
    assert day == [
        ("C2", 1, 100.0, 6.7, ""), ("C1", 2, 96.7, 23.4, "left"), ("C4", 3, 86.7, -6.6, ""),
        ("C3", 4, 66.7, -33.3, "entered"),
    ]  # fmt: skip
    assert [(r["unit_id"], r["flag_change"]) for r in got["published.read.week.police"]] == [
        ("P1", "left"), ("P2", "entered"),
    ]  # fmt: skip
    assert [r["unit_id"] for r in got["published.read.month"]] == ["C2", "C4", "C1", "C3"]
    assert got["published.units.police_station"] == [("P1", "D", 25_000), ("P2", "D", 15_000)]
    assert got["published.district_populations"] == {"D": 40_000}
    assert got["published.unit_counts"]["C3"] == {("call110", "criminal", 3): 3, ("call110", "criminal", 5): 1}
    daily = [(r[1], r[3], r[4], r[5]) for r in got["published.district_daily_counts"]]
    assert daily == [
        (small_city.DAY1, "criminal", 3, 4), (small_city.DAY1, "dispute", 2, 2), (small_city.DAY1, "dispute", 3, 2),
        (small_city.DAY2, "criminal", 3, 5), (small_city.DAY2, "criminal", 5, 1), (small_city.DAY2, "dispute", 3, 1),
    ]  # fmt: skip
    assert (got["published.latest.day"], got["published.latest.none"]) == (small_city.DAY2, None)
    c3 = next(r for r in got["units.latest_snapshot"] if r["unit_id"] == "C3")
    assert (c3["level"], c3["weighted_score"], c3["worst_score"], c3["as_of"]) == (
        "orange", 60.0, 120.0, NOW - timedelta(minutes=5),
    )  # fmt: skip
    assert [h["weighted_score"] for h in got["units.history"]] == [60.0]


def run_baseline_work(executor: Executor) -> dict[str, Any]:
    """Learn a baseline from the sample events, store it, list it and load it back."""
    migrate(executor)
    load_sample(executor)
    index = shipped_index()
    report = learn_snapshot(executor, index, now=NOW, weeks=1)
    newest = baselines.newest(executor)
    return {
        "history": sorted(baselines.history(executor, NOW - timedelta(weeks=1), NOW)),
        "learned": report.learned,
        "events_by_source": report.events_by_source,
        "snapshots": baselines.snapshots(executor, limit=5),
        "newest": newest,
        "loaded": baselines.load(executor, newest.version if newest else ""),
        "loaded.grid": baselines.load_grid(executor, newest.version if newest else "", "G0001"),
        "missing": baselines.load(executor, "no-such-version"),
        "missing.grid": baselines.load_grid(executor, "no-such-version", "G0001"),
    }


def test_baseline_learning_agrees_on_both_engines(server_executor: DriverExecutor, chdb_executor: ChdbExecutor) -> None:
    results = {name: run_baseline_work(executor) for name, executor in (("18.16", server_executor),
                                                                        ("chdb", chdb_executor))}  # fmt: skip
    for key in results["18.16"]:
        assert results["18.16"][key] == results["chdb"][key], key
    got = results["chdb"]
    # T0 is Monday 09:00 UTC: hour of the week 9. e-1 (redelivered: still one event) and e-2 are criminal
    # calls at severity 3 (3.0 each); e-3 is a camera event of an unlisted type (default weight 0.5).
    assert got["history"] == [("G0001", "call110", "criminal", 3, 9, 2), ("G0002", "camera", "crowd", 3, 9, 1)]
    assert got["learned"].cells == {("G0001", "call110"): {9: 6.0}, ("G0002", "camera"): {9: 0.5}}
    assert got["learned"].unit_weights == {"call110": 3.0, "camera": 0.5}
    assert got["events_by_source"] == {"call110": 2, "camera": 1}
    assert got["loaded"] == got["learned"]
    assert got["newest"].version == got["learned"].version == "20261123T12Z-1w"
    assert (got["newest"].history_from, got["newest"].history_to) == (NOW - timedelta(weeks=1), NOW)
    assert [s.version for s in got["snapshots"]] == ["20261123T12Z-1w"] and got["missing"] is None
    # One grid's slice (as the API reads it) gives that grid the same expectations as the whole snapshot.
    assert got["loaded.grid"].cells == {("G0001", "call110"): {9: 6.0}} and got["missing.grid"] is None
    assert got["loaded"].grids == {"G0001", "G0002"} and got["loaded.grid"].grids == {"G0001"}
    index = shipped_index()
    grids = [GridProfile("G0001", "urban", 500), GridProfile("G0002", "urban", 500)]
    whole = BaselineModel(index.baseline, grids, got["loaded"])
    one = BaselineModel(index.baseline, grids[:1], got["loaded.grid"])
    for source in ("call110", "camera"):
        assert one.hourly("G0001", source) == pytest.approx(whole.hourly("G0001", source))


def test_losing_an_add_column_race_is_not_an_error(
    server_executor: DriverExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker and the API migrate at start-up: both may find a column missing, and both ALTER."""
    migrate(server_executor)  # the winner
    server_executor.query("TRUNCATE TABLE schema_migrations")  # the loser had seen nothing applied...
    monkeypatch.setattr(migrate_module, "_column_exists", lambda executor, statement: False)  # ...nor the columns
    assert migrate(server_executor) == [m.version for m in load_migrations()]
