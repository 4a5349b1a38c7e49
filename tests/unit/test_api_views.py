"""Pure builders of API bodies: the risk snapshot, filters, summary, GeoJSON and hot spots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pingan.api.models import GridRisk, RiskFeatureCollection, RiskResponse
from pingan.api.responses import dumps
from pingan.api.views import build_snapshot, close_ring, feature_collection, select, summarize, top_by_score
from pingan.grids import Grid, GridRegistry, ring_area_centroid

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _grid(index: int, community: str) -> Grid:
    lon, lat = 103.6 + index * 0.01, 31.0
    ring = ((lon, lat), (lon + 0.01, lat), (lon + 0.01, lat + 0.01), (lon, lat + 0.01))
    area, centroid = ring_area_centroid(ring)
    return Grid(f"G{index}", f"网格{index}", "urban", 100, 40, "D1", "S1", community, "P1", ring, centroid,
                (lon, lat, lon + 0.01, lat + 0.01), area)  # fmt: skip


REGISTRY = GridRegistry([_grid(1, "C1"), _grid(2, "C1"), _grid(3, "C2"), _grid(4, "C2")])


def _row(grid_id: str, score: float, level: str, minutes_ago: int = 0, source: str = "call110") -> dict[str, Any]:
    return {"grid_id": grid_id, "as_of": NOW - timedelta(minutes=minutes_ago), "score": score, "level": level,
            "previous_level": "", "window_events": 3, "dominant_source": source, "config_version": "v1"}  # fmt: skip


ROWS = [_row("G2", 91.0, "red", 10), _row("G3", 65.0, "yellow", 2, source=""), _row("G-OLD", 99.0, "red")]


def test_close_ring_repeats_the_first_position_once() -> None:
    assert close_ring(((1.0, 2.0), (3.0, 2.0), (3.0, 4.0))) == [[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 2.0]]
    closed = [[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 2.0]]
    assert close_ring([tuple(p) for p in closed]) == closed  # type: ignore[misc]


def test_snapshot_lists_every_registry_grid_and_defaults_to_green() -> None:
    snapshot = build_snapshot(REGISTRY, ROWS, NOW)
    assert [g["grid_id"] for g in snapshot.grids] == ["G1", "G2", "G3", "G4"]
    assert snapshot.by_id["G1"] == {
        "grid_id": "G1", "name": "网格1", "community_id": "C1", "subdistrict_id": "S1", "police_station_id": "P1",
        "level": "green", "score": 0.0, "as_of": None, "dominant_source": None, "window_events": 0,
        "config_version": None, "own_score": 0.0, "own_level": "green", "spatial": None,
    }  # fmt: skip
    assert (snapshot.by_id["G2"]["level"], snapshot.by_id["G2"]["score"]) == ("red", 91.0)
    assert snapshot.by_id["G3"]["dominant_source"] is None  # "" in ClickHouse means none
    assert snapshot.unregistered == 1
    for item in snapshot.grids:
        GridRisk.model_validate(orjson.loads(dumps(item)))


def test_filters_and_summary() -> None:
    snapshot = build_snapshot(REGISTRY, ROWS, NOW)
    assert [g["grid_id"] for g in select(snapshot.grids, frozenset({"red", "yellow"}))] == ["G2", "G3"]
    assert [g["grid_id"] for g in select(snapshot.grids, None, "C2")] == ["G3", "G4"]
    assert [g["grid_id"] for g in select(snapshot.grids, frozenset({"green"}), "C2")] == ["G4"]
    assert select(snapshot.grids, None, "C-NONE") == []
    summary = summarize(select(snapshot.grids, None, "C2"), snapshot)
    assert summary == {"grids": 2, "levels": {"green": 1, "yellow": 1, "orange": 0, "red": 0},
                       "as_of": NOW - timedelta(minutes=2), "fetched_at": NOW, "unregistered_grids": 1,
                       "version": 0}  # fmt: skip
    empty = summarize([], snapshot)
    assert (empty["grids"], empty["as_of"], sum(empty["levels"].values())) == (0, None, 0)
    body = {"summary": summary, "full": True, "since": None, "grids": list(snapshot.grids)}
    RiskResponse.model_validate(orjson.loads(dumps(body)))


def test_geojson_feature_collection() -> None:
    snapshot = build_snapshot(REGISTRY, ROWS, NOW)
    items = list(snapshot.grids)
    document = orjson.loads(dumps(feature_collection(items, REGISTRY, summarize(items, snapshot))))
    RiskFeatureCollection.model_validate(document)
    assert document["type"] == "FeatureCollection"
    first = document["features"][0]
    assert first["id"] == "G1" and first["geometry"]["type"] == "Polygon"
    (ring,) = first["geometry"]["coordinates"]
    assert ring == [[103.61, 31.0], [103.62, 31.0], [103.62, 31.01], [103.61, 31.01], [103.61, 31.0]]
    assert first["properties"]["level"] == "green"
    assert document["features"][1]["properties"]["as_of"] == "2026-11-23T11:50:00Z"  # UTC with Z


def test_top_by_score_skips_zero_and_breaks_ties_by_id() -> None:
    items = [{"grid_id": g, "score": s} for g, s in [("G9", 50.0), ("G1", 0.0), ("G3", 50.0), ("G2", 70.0)]]
    assert [i["grid_id"] for i in top_by_score(items, 10)] == ["G2", "G3", "G9"]
    assert [i["grid_id"] for i in top_by_score(items, 1)] == ["G2"]


def test_rendered_bodies_are_memoised_per_snapshot_with_a_bound() -> None:
    snapshot = build_snapshot(REGISTRY, ROWS, NOW)
    calls = []

    def render() -> bytes:
        calls.append(1)
        return b"{}"

    assert snapshot.rendered("a", render) == snapshot.rendered("a", render) == b"{}"
    assert len(calls) == 1
    for key in range(3):
        snapshot.rendered(("k", key), render, max_entries=2)
    snapshot.rendered(("k", 2), render, max_entries=2)
    assert len(calls) == 5  # beyond the bound bodies are rendered, not kept


@pytest.mark.parametrize("level", ["green", "yellow", "orange", "red"])
def test_every_level_counts(level: str) -> None:
    snapshot = build_snapshot(REGISTRY, [_row("G1", 50.0, level)], NOW)
    assert summarize(snapshot.grids, snapshot)["levels"][level] >= 1
