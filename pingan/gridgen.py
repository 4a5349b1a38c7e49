"""A grid registry for any city: square cells over a bounding box, with the hierarchy taken from the data.

``pingan grids generate`` writes a ``pingan-grids/1`` file (the format :class:`pingan.grids.GridRegistry`
reads; the worker and API take it through ``PINGAN_GRID_REGISTRY_PATH``). Pure: no I/O here, the command
reads the inputs and writes the file.

Cells
    Squares of ``cell_metres`` on a side, laid from the bounding box's south-west corner in a local
    equirectangular projection at the box's mid latitude (exact enough at city scale: a 500 m cell is off
    by well under a metre across a 50 km box). Neighbouring cells share their edge vertices exactly, so
    every point inside the kept cells belongs to one grid. Grid ids are ``{prefix}-R{row}-C{column}``.

Which cells are kept
    Without points, every cell of the box. With points (the data's own events), the cells holding at least
    ``min_points`` of them: a city's box holds lake, farmland and airports where no grid is wanted. With
    areas (GeoJSON polygons), the cells whose centre lies in an area.

Hierarchy (district → subdistrict → community, and police station)
    The district is the whole registry (``prefix``). Each cell's subdistrict, community and police station
    are the labels most of its points carry (Toronto's neighbourhoods, Minneapolis's precincts and
    neighbourhoods), or the area its centre lies in. A level the data does not have gets one unit,
    "unassigned", so the registry stays complete. Population is unknown unless given (0): the baseline's
    priors then use the grid type alone, and learned history does the rest.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pingan.grids import normalise_ring, point_in_ring

__all__ = ["HIERARCHY_LEVELS", "Area", "LabelledPoint", "areas_from_geojson", "generate_registry"]

FORMAT: Final = "pingan-grids/1"
# Levels a cell takes from its points' labels or its area, as grid fields.
HIERARCHY_LEVELS: Final = ("subdistrict", "community", "police_station")
UNASSIGNED: Final = "unassigned"
_METRES_PER_DEG_LAT: Final = math.radians(1.0) * 6_371_008.8
_MAX_CELLS: Final = 400_000  # a 300 x 300 km box at 500 m; beyond it the command is surely mistaken


@dataclass(frozen=True, slots=True)
class LabelledPoint:
    """One event location with the areas the data itself puts it in (level -> area name)."""

    lon: float
    lat: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Area:
    """A named polygon (e.g. a neighbourhood from a GeoJSON file) and the level it stands for."""

    name: str
    ring: tuple[tuple[float, float], ...]
    level: str = "community"


def _slug(name: str) -> str:
    kept = "".join(c if c.isalnum() else "-" for c in name.strip().upper())
    return "-".join(part for part in kept.split("-") if part)[:40] or "X"


def _majority(labels: Counter[str]) -> str:
    # Ties broken by name, so the same data always gives the same file.
    return min(labels.items(), key=lambda item: (-item[1], item[0]))[0] if labels else UNASSIGNED


def generate_registry(
    bbox: tuple[float, float, float, float],
    cell_metres: float,
    *,
    name: str,
    prefix: str,
    points: Iterable[LabelledPoint] | None = None,
    areas: Sequence[Area] = (),
    min_points: int = 1,
    population: int = 0,
    grid_type: str = "urban",
) -> dict[str, Any]:
    """The registry document (``pingan-grids/1``) for square cells over ``bbox`` (min lon, min lat, max lon,
    max lat). See the module docstring for which cells are kept and where their hierarchy comes from."""
    min_lon, min_lat, max_lon, max_lat = bbox
    if not (min_lon < max_lon and min_lat < max_lat):
        raise ValueError("bbox must be min_lon,min_lat,max_lon,max_lat with min < max")
    if cell_metres <= 0:
        raise ValueError("cell_metres must be > 0")
    if not prefix or _slug(prefix) != prefix:
        raise ValueError("prefix must be upper-case letters, digits and dashes, e.g. TOR")
    mid_lat = (min_lat + max_lat) / 2
    dlat = cell_metres / _METRES_PER_DEG_LAT
    dlon = cell_metres / (_METRES_PER_DEG_LAT * math.cos(math.radians(mid_lat)))
    columns = max(1, math.ceil((max_lon - min_lon) / dlon))
    rows = max(1, math.ceil((max_lat - min_lat) / dlat))
    if rows * columns > _MAX_CELLS:
        raise ValueError(f"{rows} x {columns} cells: more than {_MAX_CELLS}; use larger cells or a smaller box")

    def corner(row: int, column: int) -> tuple[float, float]:
        # Rounded to 1e-7 degrees (about a centimetre) the same way for every cell: shared edges stay shared.
        return (round(min_lon + column * dlon, 7), round(min_lat + row * dlat, 7))

    labels: dict[tuple[int, int], dict[str, Counter[str]]] = {}
    counts: Counter[tuple[int, int]] = Counter()
    if points is not None:
        for point in points:
            column = math.floor((point.lon - min_lon) / dlon)
            row = math.floor((point.lat - min_lat) / dlat)
            if not (0 <= row < rows and 0 <= column < columns):
                continue
            counts[(row, column)] += 1
            cell_labels = labels.setdefault((row, column), {})
            for level, value in point.labels.items():
                if level in HIERARCHY_LEVELS and value:
                    cell_labels.setdefault(level, Counter())[str(value)] += 1

    kept: dict[tuple[int, int], dict[str, str]] = {}
    for row in range(rows):
        for column in range(columns):
            if points is not None and counts[(row, column)] < min_points:
                continue
            assigned = {level: _majority(c) for level, c in labels.get((row, column), {}).items()}
            if areas:
                x0, y0 = corner(row, column)
                centre = (x0 + dlon / 2, y0 + dlat / 2)
                inside = [area for area in areas if point_in_ring(centre[0], centre[1], area.ring)]
                if not inside:
                    continue
                for area in inside[:1]:
                    assigned.setdefault(area.level, area.name)
            kept[(row, column)] = assigned
    if not kept:
        raise ValueError("no cell is kept: check the bbox, min_points and the areas")

    # Units: a community's parent is the subdistrict most of its cells are in.
    names: dict[str, dict[str, str]] = {level: {} for level in HIERARCHY_LEVELS}  # level -> name -> unit id
    community_parent: dict[str, Counter[str]] = {}
    for assigned in kept.values():
        for level in HIERARCHY_LEVELS:
            names[level].setdefault(assigned.get(level, UNASSIGNED), "")
        community_parent.setdefault(assigned.get("community", UNASSIGNED), Counter())[
            assigned.get("subdistrict", UNASSIGNED)
        ] += 1
    tags = {"subdistrict": "S", "community": "C", "police_station": "PS"}
    for level, found in names.items():
        for i, area_name in enumerate(sorted(found), start=1):
            found[area_name] = f"{prefix}-{tags[level]}{i:03d}"
    units: list[dict[str, Any]] = [{"unit_id": prefix, "name": name, "level": "district", "parent_id": None}]
    for level in HIERARCHY_LEVELS:
        for area_name, unit_id in sorted(names[level].items(), key=lambda item: item[1]):
            parent = prefix
            if level == "community":
                parent = names["subdistrict"][_majority(community_parent[area_name])]
            units.append({"unit_id": unit_id, "name": area_name, "level": level, "parent_id": parent})

    def grid_id(row: int, column: int) -> str:
        return f"{prefix}-R{row:03d}-C{column:03d}"

    grids = []
    for (row, column), assigned in sorted(kept.items()):
        polygon = normalise_ring(
            [corner(row, column), corner(row, column + 1), corner(row + 1, column + 1), corner(row + 1, column)]
        )
        neighbours = sorted(
            grid_id(r, c)
            for r, c in ((row - 1, column), (row + 1, column), (row, column - 1), (row, column + 1))
            if (r, c) in kept
        )
        area = {level: assigned.get(level, UNASSIGNED) for level in HIERARCHY_LEVELS}
        grids.append({
            "grid_id": grid_id(row, column),
            "name": f"{area['community']} {row:03d}-{column:03d}",
            "grid_type": grid_type,
            "population": population,
            "households": 0,
            "district_id": prefix,
            "subdistrict_id": names["subdistrict"][area["subdistrict"]],
            "community_id": names["community"][area["community"]],
            "police_station_id": names["police_station"][area["police_station"]],
            "polygon": [list(p) for p in polygon],
            "neighbours": neighbours,
        })  # fmt: skip
    return {
        "format": FORMAT,
        "name": name,
        "generator": f"pingan grids generate: {cell_metres:g} m cells over {list(bbox)}",
        "center": [(min_lon + max_lon) / 2, mid_lat],
        "population": population * len(grids),
        "units": units,
        "grids": grids,
    }


def areas_from_geojson(document: Mapping[str, Any], name_property: str, level: str = "community") -> list[Area]:
    """Areas from a GeoJSON FeatureCollection of Polygon / MultiPolygon features (outer rings only)."""
    if level not in HIERARCHY_LEVELS:
        raise ValueError(f"level must be one of {', '.join(HIERARCHY_LEVELS)}")
    features = document.get("features")
    if document.get("type") != "FeatureCollection" or not isinstance(features, list):
        raise ValueError("areas must be a GeoJSON FeatureCollection")
    areas = []
    for i, feature in enumerate(features):
        geometry = feature.get("geometry") or {}
        properties = feature.get("properties") or {}
        area_name = properties.get(name_property)
        if area_name is None:
            raise ValueError(f"feature {i} has no property {name_property!r}")
        if geometry.get("type") == "Polygon":
            polygons = [geometry["coordinates"]]
        elif geometry.get("type") == "MultiPolygon":
            polygons = geometry["coordinates"]
        else:
            raise ValueError(f"feature {i}: geometry {geometry.get('type')!r} is not a Polygon or MultiPolygon")
        areas.extend(Area(str(area_name), normalise_ring(polygon[0]), level) for polygon in polygons)
    return areas
