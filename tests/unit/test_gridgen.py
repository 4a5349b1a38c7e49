"""Grid registries for any city (pingan/gridgen.py) and `pingan grids generate`."""

from __future__ import annotations

import math

import orjson
import pytest

from pingan.cli import main
from pingan.gridgen import Area, LabelledPoint, areas_from_geojson, generate_registry
from pingan.grids import GridRegistry

# A 2 km x 1 km box at Toronto's latitude: 4 x 2 cells of 500 m.
LAT0 = 43.7
DLAT = 500 / (math.radians(1.0) * 6_371_008.8)
DLON = DLAT / math.cos(math.radians(LAT0 + DLAT))
BBOX = (-79.4, LAT0, -79.4 + 4 * DLON - 1e-9, LAT0 + 2 * DLAT - 1e-9)


def _centre(row: int, column: int) -> tuple[float, float]:
    return (BBOX[0] + (column + 0.5) * DLON, BBOX[1] + (row + 0.5) * DLAT)


def test_every_cell_of_the_box_without_points() -> None:
    document = generate_registry(BBOX, 500, name="Box", prefix="BOX")
    registry = GridRegistry.from_document(document)
    assert [g.grid_id for g in registry.grids] == [f"BOX-R{r:03d}-C{c:03d}" for r in range(2) for c in range(4)]
    cell = registry.get("BOX-R000-C000")
    assert cell is not None
    assert cell.area_km2 == pytest.approx(0.25, rel=1e-3)
    assert cell.neighbours == ("BOX-R000-C001", "BOX-R001-C000")
    assert registry.get("BOX-R001-C002").neighbours == ("BOX-R000-C002", "BOX-R001-C001", "BOX-R001-C003")
    # one unit per level, "unassigned" where the data say nothing
    assert [(u.unit_id, u.name) for u in registry.units["community"]] == [("BOX-C001", "unassigned")]
    assert [u.unit_id for u in registry.units["district"]] == ["BOX"]
    assert document["population"] == 0 and cell.population == 0


def test_points_choose_cells_and_their_areas_by_majority() -> None:
    points = [
        LabelledPoint(*_centre(0, 0), {"community": "Annex", "subdistrict": "P1"}),
        LabelledPoint(*_centre(0, 0), {"community": "Annex", "subdistrict": "P1"}),
        LabelledPoint(*_centre(0, 0), {"community": "Yorkville", "subdistrict": "P1"}),
        LabelledPoint(*_centre(1, 3), {"community": "Yorkville", "subdistrict": "P2"}),
        LabelledPoint(*_centre(1, 2), {"community": "Yorkville", "subdistrict": "P2"}),
        LabelledPoint(-80.0, 40.0, {"community": "far away"}),  # outside the box: ignored
    ]
    registry = GridRegistry.from_document(generate_registry(BBOX, 500, name="Box", prefix="BOX", points=points))
    assert [g.grid_id for g in registry.grids] == ["BOX-R000-C000", "BOX-R001-C002", "BOX-R001-C003"]
    names = {u.unit_id: u.name for level in registry.units.values() for u in level}
    first = registry.get("BOX-R000-C000")
    assert names[first.community_id] == "Annex" and names[first.subdistrict_id] == "P1"
    assert names[registry.get("BOX-R001-C003").community_id] == "Yorkville"
    assert first.neighbours == ()  # its neighbours were not kept
    assert registry.get("BOX-R001-C002").neighbours == ("BOX-R001-C003",)
    yorkville = next(u for u in registry.units["community"] if u.name == "Yorkville")
    assert names[yorkville.parent_id] == "P2"  # two of its three cells... its cells are in P2
    # every event location is found in the cell it was counted in
    assert registry.locate(*_centre(1, 3)).grid_id == "BOX-R001-C003"
    assert registry.locate(*_centre(0, 1)) is None

    kept = generate_registry(BBOX, 500, name="Box", prefix="BOX", points=points, min_points=2)
    assert [g["grid_id"] for g in kept["grids"]] == ["BOX-R000-C000"]


def test_shared_edges_give_one_grid_per_point() -> None:
    registry = GridRegistry.from_document(generate_registry(BBOX, 500, name="Box", prefix="BOX"))
    edge_lon = BBOX[0] + DLON  # the edge between column 0 and column 1
    lon = registry.get("BOX-R000-C001").polygon[0][0]
    assert lon == pytest.approx(edge_lon, abs=1e-7)
    assert registry.locate(lon, _centre(0, 0)[1]).grid_id == "BOX-R000-C001"  # east of the edge, half-open


def test_areas_from_geojson_keep_cells_whose_centre_is_inside() -> None:
    x0, y0 = BBOX[0], BBOX[1]
    square = [[x0, y0], [x0 + 2 * DLON, y0], [x0 + 2 * DLON, y0 + DLAT], [x0, y0 + DLAT], [x0, y0]]
    geojson = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Ward 1"}, "geometry": {"type": "Polygon", "coordinates": [square]}},
    ]}  # fmt: skip
    areas = areas_from_geojson(geojson, "name", "subdistrict")
    assert areas == [Area("Ward 1", tuple((x, y) for x, y in square[:-1]), "subdistrict")]
    registry = GridRegistry.from_document(generate_registry(BBOX, 500, name="Box", prefix="BOX", areas=areas))
    assert [g.grid_id for g in registry.grids] == ["BOX-R000-C000", "BOX-R000-C001"]
    assert {registry.unit(g.subdistrict_id).name for g in registry.grids} == {"Ward 1"}
    with pytest.raises(ValueError, match="no property 'ward'"):
        areas_from_geojson(geojson, "ward")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bbox": (1.0, 1.0, 0.0, 2.0)}, "min < max"),
        ({"cell_metres": 0}, "cell_metres"),
        ({"prefix": "to r"}, "prefix"),
        ({"cell_metres": 1.0}, "more than"),
        ({"points": [LabelledPoint(-80.0, 40.0)]}, "no cell is kept"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    arguments = {"bbox": BBOX, "cell_metres": 500.0, "name": "Box", "prefix": "BOX", **kwargs}
    bbox, cell = arguments.pop("bbox"), arguments.pop("cell_metres")
    with pytest.raises(ValueError, match=message):
        generate_registry(bbox, cell, **arguments)


def test_command_writes_a_registry_the_worker_can_load(tmp_path, capsys) -> None:
    csv_path = tmp_path / "events.csv"
    rows = ["Long,Lat,Neighbourhood", *(f"{lon},{lat},Annex" for lon, lat in (_centre(0, 0), _centre(1, 1)))]
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "grids.json"
    bbox = ",".join(str(v) for v in BBOX)
    code = main(["grids", "generate", f"--bbox={bbox}", "--cell-metres", "500", "--name", "Box", "--prefix", "BOX",
                 "--points", str(csv_path), "--lon-column", "Long", "--lat-column", "Lat",
                 "--community-column", "Neighbourhood", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert "2 grids of 500 m" in capsys.readouterr().out
    registry = GridRegistry.load(out)
    assert [registry.unit(g.community_id).name for g in registry.grids] == ["Annex", "Annex"]
    assert orjson.loads(out.read_bytes())["format"] == "pingan-grids/1"

    code = main(["grids", "generate", f"--bbox={bbox}", "--name", "Box", "--prefix", "BOX", "--points", str(csv_path),
                 "--community-column", "Missing", "--out", str(out)])  # fmt: skip
    assert code == 2
    assert "no column lon, lat, Missing" in capsys.readouterr().err
