"""Roll-ups, hand-computed: worst level, population-weighted and worst score, counts, top grids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pingan.grids import Grid, GridRegistry, Unit, ring_area_centroid
from pingan.index.rollup import GridScore, UnitRisk, members, roll_up, roll_up_unit, scores_from_rows

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _grid(index: int, population: int, community: str, subdistrict: str, station: str) -> Grid:
    lon, lat = 103.6 + index * 0.01, 31.0
    ring = ((lon, lat), (lon + 0.01, lat), (lon + 0.01, lat + 0.01), (lon, lat + 0.01))
    area, centroid = ring_area_centroid(ring)
    return Grid(f"G{index}", f"网格{index}", "urban", population, population // 3, "D", subdistrict, community,
                station, ring, centroid, (lon, lat, lon + 0.01, lat + 0.01), area)  # fmt: skip


UNITS = [
    Unit("D", "平安区", "district", None),
    Unit("S1", "安宁街道", "subdistrict", "D"),
    Unit("S2", "松溪镇", "subdistrict", "D"),
    Unit("C1", "明西社区", "community", "S1"),
    Unit("C2", "东城社区", "community", "S1"),
    Unit("C3", "松溪村", "community", "S2"),
    Unit("C4", "新区社区", "community", "S2"),  # no grids yet
    Unit("P1", "安宁派出所", "police_station", "D"),
    Unit("P2", "松溪派出所", "police_station", "D"),
]
GRIDS = [
    _grid(1, 100, "C1", "S1", "P1"),
    _grid(2, 300, "C1", "S1", "P2"),
    _grid(3, 0, "C1", "S1", "P2"),  # a market: no residents
    _grid(4, 200, "C2", "S1", "P1"),
    _grid(5, 200, "C2", "S1", "P2"),
    _grid(6, 0, "C3", "S2", "P1"),
    _grid(7, 0, "C3", "S2", "P2"),
]
REGISTRY = GridRegistry(GRIDS, UNITS)

SCORES = {
    # G1 is held at orange by hysteresis although its score has dropped: the level, not the score, counts.
    "G1": GridScore(40.0, "orange", NOW - timedelta(minutes=30), "call110"),
    "G2": GridScore(60.0, "yellow", NOW - timedelta(minutes=10), "app_report"),
    "G3": GridScore(120.0, "orange", NOW - timedelta(minutes=5), "camera"),
    # G4: never assessed (green, 0)
    "G5": GridScore(160.0, "red", NOW - timedelta(minutes=1), "call110"),
    "G6": GridScore(30.0, "green", NOW - timedelta(minutes=2)),
    "G7": GridScore(50.0, "yellow", NOW - timedelta(minutes=3)),
}


def _by_id(level: str) -> dict[str, UnitRisk]:
    return {unit.unit_id: unit for unit in roll_up(REGISTRY, SCORES, level)}


def test_community_level_is_the_worst_grid_and_scores_are_weighted_and_worst() -> None:
    units = roll_up(REGISTRY, SCORES, "community")
    assert [u.unit_id for u in units] == ["C1", "C2", "C3", "C4"]
    c1, c2, c3, c4 = units
    # C1: (100*40 + 300*60 + 0*120) / 400 = 22000 / 400 = 55.0; worst 120; G1 and G3 orange
    assert (c1.level, c1.weighted_score, c1.worst_score) == ("orange", 55.0, 120.0)
    assert (c1.grids, c1.population, dict(c1.levels)) == (3, 400, {"green": 0, "yellow": 1, "orange": 2, "red": 0})
    # Worst level first, then score: G1 (orange, 40) ranks above G2 (yellow, 60).
    assert [(t.grid_id, t.level, t.score) for t in c1.top_grids] == [
        ("G3", "orange", 120.0), ("G1", "orange", 40.0), ("G2", "yellow", 60.0),
    ]  # fmt: skip
    assert c1.top_grids[0].dominant_source == "camera"
    assert (c1.name, c1.parent_id, c1.as_of) == ("明西社区", "S1", NOW - timedelta(minutes=5))
    # C2: (200*0 + 200*160) / 400 = 80.0; the unassessed grid is green and never a top grid
    assert (c2.level, c2.weighted_score, c2.worst_score) == ("red", 80.0, 160.0)
    assert dict(c2.levels) == {"green": 1, "yellow": 0, "orange": 0, "red": 1}
    assert [t.grid_id for t in c2.top_grids] == ["G5"]
    # C3: no residents at all, so the plain mean (30 + 50) / 2 = 40.0
    assert (c3.level, c3.weighted_score, c3.worst_score, c3.population) == ("yellow", 40.0, 50.0, 0)
    # C4: a unit without grids is green with nothing in it
    assert (c4.level, c4.weighted_score, c4.worst_score, c4.grids, c4.top_grids, c4.as_of) == (
        "green", 0.0, 0.0, 0, (), None,
    )  # fmt: skip


def test_subdistrict_district_and_police_station() -> None:
    subdistricts = _by_id("subdistrict")
    s1, s2 = subdistricts["S1"], subdistricts["S2"]
    # S1: (4000 + 18000 + 0 + 0 + 32000) / 800 = 67.5
    assert (s1.level, s1.weighted_score, s1.worst_score, s1.grids) == ("red", 67.5, 160.0, 5)
    assert (s2.level, s2.weighted_score) == ("yellow", 40.0)
    (district,) = roll_up(REGISTRY, SCORES, "district")
    assert (district.level, district.weighted_score, district.worst_score) == ("red", 67.5, 160.0)
    assert dict(district.levels) == {"green": 2, "yellow": 2, "orange": 2, "red": 1}
    assert district.as_of == NOW - timedelta(minutes=1)
    stations = _by_id("police_station")
    p1, p2 = stations["P1"], stations["P2"]
    # P1 = G1, G4, G6: (100*40 + 200*0 + 0*30) / 300 = 13.333... -> 13.3; level orange from G1
    assert (p1.level, p1.weighted_score, p1.worst_score) == ("orange", 13.3, 40.0)
    # P2 = G2, G3, G5, G7: (300*60 + 0 + 200*160 + 0) / 500 = 100.0
    assert (p2.level, p2.weighted_score, p2.worst_score) == ("red", 100.0, 160.0)
    assert [t.grid_id for t in p2.top_grids] == ["G5", "G3", "G2"]


def test_top_is_configurable_and_everything_green_when_nothing_is_assessed() -> None:
    (c1,) = [u for u in roll_up(REGISTRY, SCORES, "community", top=1) if u.unit_id == "C1"]
    assert [t.grid_id for t in c1.top_grids] == ["G3"]
    quiet = roll_up(REGISTRY, {}, "district")[0]
    assert (quiet.level, quiet.weighted_score, quiet.worst_score, quiet.top_grids) == ("green", 0.0, 0.0, ())
    assert dict(quiet.levels) == {"green": 7, "yellow": 0, "orange": 0, "red": 0}


def test_one_unit_and_unknown_units() -> None:
    c2 = roll_up_unit(REGISTRY, SCORES, "community", "C2")
    assert c2 is not None and c2.weighted_score == 80.0
    assert roll_up_unit(REGISTRY, SCORES, "community", "P1") is None  # a police station, not a community
    assert roll_up_unit(REGISTRY, SCORES, "community", "C9") is None
    with pytest.raises(ValueError, match="unit level"):
        roll_up(REGISTRY, SCORES, "province")


def test_bare_registry_takes_units_from_the_grids() -> None:
    bare = GridRegistry([_grid(1, 100, "CB", "S1", "P1"), _grid(2, 100, "CA", "S1", "P1")])
    assert list(members(bare, "community")) == ["CA", "CB"]
    (unit,) = [u for u in roll_up(bare, {"G1": GridScore(90.0, "red")}, "community") if u.unit_id == "CB"]
    assert (unit.name, unit.parent_id, unit.level, unit.weighted_score) == ("CB", None, "red", 90.0)


def test_scores_from_risk_rows_and_dict_shape() -> None:
    rows = [
        {"grid_id": "G5", "score": 160, "level": "red", "as_of": NOW, "dominant_source": "call110"},
        {"grid_id": "G6", "score": 0.0, "level": "green", "as_of": None, "dominant_source": ""},
    ]
    scores = scores_from_rows(rows)
    assert scores == {"G5": GridScore(160.0, "red", NOW, "call110"), "G6": GridScore(0.0, "green", None, None)}
    unit = roll_up_unit(REGISTRY, scores, "community", "C2")
    assert unit is not None
    assert unit.as_dict() == {
        "unit_level": "community", "unit_id": "C2", "name": "东城社区", "parent_id": "S1", "level": "red",
        "weighted_score": 80.0, "worst_score": 160.0, "grids": 2, "population": 400,
        "levels": {"green": 1, "yellow": 0, "orange": 0, "red": 1},
        "top_grids": [{"grid_id": "G5", "name": "网格5", "score": 160.0, "level": "red",
                       "dominant_source": "call110"}],
        "as_of": NOW,
    }  # fmt: skip
