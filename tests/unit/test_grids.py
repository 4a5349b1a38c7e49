"""The grid registry and the generated demo district (deploy/data/grids.json)."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from pingan.errors import ConfigError
from pingan.grids import Grid, GridRegistry, Unit, normalise_ring, ring_area_centroid
from pingan.producers import citygen
from tests.support.defaults import default_settings

PATH = default_settings().grid_registry_path


# --- the committed demo district ---------------------------------------------------------------------------


def test_regenerating_gives_the_committed_file_byte_for_byte() -> None:
    assert citygen.render(citygen.generate()) == PATH.read_bytes(), "rerun: python -m pingan.producers.citygen"


def test_file_is_small() -> None:
    assert PATH.stat().st_size < 3_000_000


def test_size_and_ids(registry: GridRegistry) -> None:
    assert len(registry.grids) >= 900
    ids = [grid.grid_id for grid in registry.grids]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # stable order
    assert all(registry.get(grid_id) is grid for grid_id, grid in zip(ids, registry.grids, strict=True))
    assert registry.get("nope") is None
    rural = sum(1 for grid in registry.grids if registry.unit(grid.community_id).name.endswith("Village"))  # type: ignore[union-attr]
    assert (len(registry.grids) - rural, rural) == (709, 271)  # the real district's urban/rural split


def test_populations_and_households(registry: GridRegistry) -> None:
    total = sum(grid.population for grid in registry.grids)
    assert abs(total - 608_400) <= 0.05 * 608_400
    residential = [grid for grid in registry.grids if grid.grid_type == "urban"]
    assert all(160 <= grid.households <= 255 for grid in residential)
    assert 2.5 <= sum(g.population for g in residential) / sum(g.households for g in residential) <= 3.1
    urban_density = sum(g.population for g in residential) / sum(g.area_km2 for g in residential)
    rural = [grid for grid in registry.grids if grid.grid_type == "rural"]
    rural_density = sum(g.population for g in rural) / sum(g.area_km2 for g in rural)
    assert urban_density > 3 * rural_density  # larger rural cells, fewer people per km²


def test_grid_types(registry: GridRegistry) -> None:
    types = Counter(grid.grid_type for grid in registry.grids)
    assert types["transport_hub"] >= 2 and types["commercial"] >= 10 and types["school_zone"] >= 10
    assert {"urban", "rural", "industrial"} <= set(types)
    assert any("火车站" in grid.name and "Railway Station" in grid.name for grid in registry.grids)


def test_area_and_place(registry: GridRegistry) -> None:
    assert sum(grid.area_km2 for grid in registry.grids) == pytest.approx(468, rel=0.03)
    min_lon, min_lat, max_lon, max_lat = registry.bbox
    assert min_lon < 103.6 < max_lon and min_lat < 31.0 < max_lat


def test_every_centroid_locates_to_its_grid(registry: GridRegistry) -> None:
    for grid in registry.grids:
        assert registry.locate(*grid.centroid) is grid, grid.grid_id


def test_points_outside_locate_to_none(registry: GridRegistry) -> None:
    min_lon, min_lat, max_lon, max_lat = registry.bbox
    for lon, lat in [(0.0, 0.0), (116.4, 39.9), (min_lon - 0.01, 31.0), (103.6, max_lat + 0.01), (-180, -90)]:
        assert registry.locate(lon, lat) is None
    assert registry.locate(math.nan, 31.0) is None
    assert registry.locate(103.6, math.inf) is None
    # Corners of the bounding box are outside the irregular outline.
    assert registry.locate(min_lon, min_lat) is None and registry.locate(max_lon, max_lat) is None


def test_hierarchy_is_consistent(registry: GridRegistry) -> None:
    units = registry.units
    assert len(units["district"]) == 1
    district = units["district"][0]
    assert district.parent_id is None and "Pingan District" in district.name
    assert len(units["subdistrict"]) >= 4
    assert len(units["police_station"]) >= 8
    villages = [unit for unit in units["community"] if unit.name.split(" ")[0].endswith("村")]
    assert len(villages) == 44
    for level in ("subdistrict", "police_station"):
        assert all(unit.parent_id == district.unit_id for unit in units[level])
    station_of_community: dict[str, set[str]] = {}
    for grid in registry.grids:
        community = registry.unit(grid.community_id)
        subdistrict = registry.unit(grid.subdistrict_id)
        station = registry.unit(grid.police_station_id)
        assert community is not None and community.level == "community"
        assert community.parent_id == grid.subdistrict_id
        assert subdistrict is not None and subdistrict.parent_id == grid.district_id == district.unit_id
        assert station is not None and station.level == "police_station"
        station_of_community.setdefault(grid.community_id, set()).add(grid.police_station_id)
    # A police station covers whole communities.
    assert all(len(stations) == 1 for stations in station_of_community.values())
    # Every unit has grids, and grids_in agrees with the grids' own fields.
    for level, found in units.items():
        for unit in found:
            members = registry.grids_in(unit.unit_id)
            assert members, unit
            assert all(getattr(grid, f"{level}_id") == unit.unit_id for grid in members)
    assert sum(len(registry.grids_in(u.unit_id)) for u in units["community"]) == len(registry.grids)


def test_names_are_bilingual(registry: GridRegistry) -> None:
    for unit in (u for found in registry.units.values() for u in found):
        chinese, english = unit.name.split(" ", 1)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese) and english.isascii(), unit.name


def _connected(registry: GridRegistry, grids: tuple[Grid, ...]) -> bool:
    members = {grid.grid_id for grid in grids}
    seen, stack = {grids[0].grid_id}, [grids[0].grid_id]
    while stack:
        grid = registry.get(stack.pop())
        assert grid is not None
        for other in grid.neighbours:
            if other in members and other not in seen:
                seen.add(other)
                stack.append(other)
    return seen == members


def test_units_are_contiguous(registry: GridRegistry) -> None:
    for level in ("subdistrict", "community", "police_station"):
        for unit in registry.units[level]:
            assert _connected(registry, registry.grids_in(unit.unit_id)), unit


def test_neighbours_are_symmetric_and_share_an_edge(registry: GridRegistry) -> None:
    for grid in registry.grids:
        assert grid.neighbours and grid.grid_id not in grid.neighbours
        edges = {frozenset(pair) for pair in zip(grid.polygon, grid.polygon[1:] + grid.polygon[:1], strict=True)}
        for other_id in grid.neighbours:
            other = registry.get(other_id)
            assert other is not None and grid.grid_id in other.neighbours
            theirs = {frozenset(p) for p in zip(other.polygon, other.polygon[1:] + other.polygon[:1], strict=True)}
            assert edges & theirs, (grid.grid_id, other_id)


def test_polygons_tile_without_overlap(registry: GridRegistry) -> None:
    """Random points and every vertex and edge point: at most one grid contains each, and locate finds it."""
    rng = random.Random(3)
    min_lon, min_lat, max_lon, max_lat = registry.bbox
    points = [(rng.uniform(min_lon, max_lon), rng.uniform(min_lat, max_lat)) for _ in range(3000)]
    for grid in registry.grids[::7]:
        ring = grid.polygon
        for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
            points += [a, ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2), (a[0] + (b[0] - a[0]) / 3, a[1] + (b[1] - a[1]) / 3)]
    inside = 0
    for lon, lat in points:
        owners = [grid for grid in registry.grids if grid.contains(lon, lat)]
        assert len(owners) <= 1, (lon, lat, [g.grid_id for g in owners])
        assert registry.locate(lon, lat) is (owners[0] if owners else None)
        inside += bool(owners)
    assert inside > len(points) / 2


def test_shared_vertices_are_claimed_by_exactly_one_grid(registry: GridRegistry) -> None:
    """A vertex inside the district touches 2-4 grids; exactly one of them owns it."""
    touching: dict[tuple[float, float], set[str]] = {}
    edges: Counter[frozenset[tuple[float, float]]] = Counter()
    for grid in registry.grids:
        for a, b in zip(grid.polygon, grid.polygon[1:] + grid.polygon[:1], strict=True):
            touching.setdefault(a, set()).add(grid.grid_id)
            edges[frozenset((a, b))] += 1
    outer = {vertex for edge, count in edges.items() if count == 1 for vertex in edge}  # on the district boundary
    interior = [vertex for vertex, grids in touching.items() if len(grids) >= 3 and vertex not in outer]
    assert len(interior) > 500
    for vertex in interior:
        owners = [grid_id for grid_id in touching[vertex] if registry.get(grid_id).contains(*vertex)]  # type: ignore[union-attr]
        assert len(owners) == 1, (vertex, touching[vertex])
        assert registry.locate(*vertex).grid_id == owners[0]  # type: ignore[union-attr]


def test_locate_is_fast(registry: GridRegistry) -> None:
    rng = random.Random(5)
    points = [grid.centroid for grid in registry.grids]
    points += [(rng.uniform(103.4, 103.8), rng.uniform(30.8, 31.2)) for _ in range(5000)]
    start = time.perf_counter()
    for lon, lat in points:
        registry.locate(lon, lat)
    per_call = (time.perf_counter() - start) / len(points)
    assert per_call < 50e-6  # ~1-3 µs measured; a generous bound that still catches a linear scan


# --- the registry's rules, on tiny hand-made grids ---------------------------------------------------------


def _square(grid_id: str, x0: float, y0: float, size: float = 1.0, closed: bool = False) -> Grid:
    ring = [(x0, y0), (x0 + size, y0), (x0 + size, y0 + size), (x0, y0 + size)]
    polygon = normalise_ring(ring + ring[:1] if closed else ring)
    area, centroid = ring_area_centroid(polygon)
    return Grid(grid_id, grid_id, "urban", 10, 4, "D", "S", "C", "P", polygon, centroid,
                (x0, y0, x0 + size, y0 + size), area)  # fmt: skip


def test_edges_belong_to_the_grid_east_or_north() -> None:
    # W | E side by side, N above W.
    registry = GridRegistry([_square("W", 100.0, 30.0), _square("E", 101.0, 30.0), _square("N", 100.0, 31.0)])
    assert registry.locate(101.0, 30.5).grid_id == "E"  # type: ignore[union-attr]
    assert registry.locate(100.5, 31.0).grid_id == "N"  # type: ignore[union-attr]
    assert registry.locate(101.0, 31.0) is None  # corner of E, W and N: the (empty) north-east quadrant
    assert registry.locate(101.0, 30.0).grid_id == "E"  # type: ignore[union-attr]
    assert registry.locate(100.0, 30.0).grid_id == "W"  # type: ignore[union-attr]
    assert registry.locate(102.0, 30.5) is None  # outer east boundary
    assert registry.locate(100.5, 32.0) is None  # outer north boundary
    assert registry.locate(100.5, 30.5).grid_id == "W"  # type: ignore[union-attr]


def test_closed_and_open_rings_are_the_same() -> None:
    assert _square("A", 1, 1, closed=True).polygon == _square("A", 1, 1).polygon
    assert len(_square("A", 1, 1, closed=True).polygon) == 4
    with pytest.raises(ValueError, match="three distinct"):
        normalise_ring([(0, 0), (1, 1), (0, 0)])
    with pytest.raises(ValueError, match="WGS-84"):
        normalise_ring([(0, 0), (200, 1), (0, 1)])


def test_area_and_centroid_of_a_square_at_the_equator() -> None:
    area, centroid = ring_area_centroid(((0.0, 0.0), (0.01, 0.0), (0.01, 0.01), (0.0, 0.01)))
    assert centroid == pytest.approx((0.005, 0.005))
    assert area == pytest.approx(1.2364, rel=1e-3)  # (1.11195 km)²


def test_registry_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        GridRegistry.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GridRegistry.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text('{"format": "other", "grids": []}')
    with pytest.raises(ConfigError, match="format"):
        GridRegistry.load(tmp_path / "old.json")
    with pytest.raises(ConfigError, match="duplicate grid id"):
        GridRegistry([_square("A", 0, 0), _square("A", 1, 0)])
    with pytest.raises(ConfigError, match="at least one grid"):
        GridRegistry([])
    with pytest.raises(ConfigError, match="community_id is not a known community"):
        GridRegistry([_square("A", 0, 0)], [Unit("D", "d", "district", None), Unit("S", "s", "subdistrict", "D")])
    document = orjson.loads(PATH.read_bytes())
    document["grids"][0]["polygon"] = [[1, 1]]
    with pytest.raises(ConfigError, match="bad polygon"):
        GridRegistry.from_document(document)
    document = orjson.loads(PATH.read_bytes())
    document["grids"][0]["neighbours"] = ["ghost"]
    with pytest.raises(ConfigError, match="unknown neighbour"):
        GridRegistry.from_document(document)
