"""``pingan grids generate``: a grid registry for any city (pingan/gridgen.py), from a box and the data.

    pingan grids generate --bbox=-79.64,43.58,-79.11,43.86 --cell-metres 500 --name Toronto --prefix TOR \\
        --points events.csv --community-column Neighbourhood --out toronto-grids.json

Point the worker and API at the file with ``PINGAN_GRID_REGISTRY_PATH``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import orjson

from pingan.errors import ConfigError
from pingan.gridgen import HIERARCHY_LEVELS, LabelledPoint, areas_from_geojson, generate_registry
from pingan.grids import GridRegistry
from pingan.settings import Settings


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        min_lon, min_lat, max_lon, max_lat = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("--bbox is min_lon,min_lat,max_lon,max_lat") from None
    return min_lon, min_lat, max_lon, max_lat


def _read_points(args: argparse.Namespace) -> list[LabelledPoint]:
    columns = {level: getattr(args, f"{level}_column") for level in HIERARCHY_LEVELS}
    points = []
    with open(args.points, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (args.lon_column, args.lat_column, *filter(None, columns.values()))
                   if c not in (reader.fieldnames or ())]  # fmt: skip
        if missing:
            raise ConfigError(f"{args.points}: no column {', '.join(missing)} (columns: {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            try:
                lon, lat = float(row[args.lon_column]), float(row[args.lat_column])
            except ValueError:
                raise ConfigError(f"{args.points}:{line}: lon/lat are not numbers") from None
            labels = {level: row[column] for level, column in columns.items() if column}
            points.append(LabelledPoint(lon, lat, labels))
    return points


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    points = _read_points(args) if args.points else None
    areas = []
    if args.areas:
        try:
            document = orjson.loads(Path(args.areas).read_bytes())
            areas = areas_from_geojson(document, args.area_property, args.area_level)
        except (OSError, orjson.JSONDecodeError, ValueError) as exc:
            raise ConfigError(f"areas {args.areas}: {exc}") from None
    try:
        document = generate_registry(
            args.bbox, args.cell_metres, name=args.name, prefix=args.prefix, points=points, areas=areas,
            min_points=args.min_points, population=args.population,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    registry = GridRegistry.from_document(document)  # the reader's own checks, before anything is written
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(document))
    per_level = ", ".join(f"{len(units)} {level}" for level, units in registry.units.items())
    print(f"{out}: {len(registry)} grids of {args.cell_metres:g} m ({per_level})")
    return 0


def add_grids_parser(commands: Any) -> None:
    grids = commands.add_parser("grids", help="grid registries")
    sub = grids.add_subparsers(dest="grids_command", required=True)
    generate = sub.add_parser("generate", help="square cells over a box, hierarchy from the data's own areas")
    generate.set_defaults(handler=_generate)
    generate.add_argument(
        "--bbox",
        type=_bbox,
        required=True,
        help="min_lon,min_lat,max_lon,max_lat (WGS-84); write --bbox=-79.6,... when it starts with a minus",
    )
    generate.add_argument("--cell-metres", type=float, default=500.0, help="side of a cell (default 500)")
    generate.add_argument("--name", required=True, help="the registry's name, e.g. Toronto")
    generate.add_argument("--prefix", required=True, help="grid id prefix and district id, e.g. TOR")
    generate.add_argument("--out", required=True, help="where to write the registry (JSON)")
    generate.add_argument("--points", help="CSV of event locations: keep the cells they fall in")
    generate.add_argument("--lon-column", default="lon")
    generate.add_argument("--lat-column", default="lat")
    for level in HIERARCHY_LEVELS:
        generate.add_argument(f"--{level.replace('_', '-')}-column", help=f"CSV column naming each point's {level}")
    generate.add_argument("--min-points", type=int, default=1, help="points a cell needs to be kept (with --points)")
    generate.add_argument("--areas", help="GeoJSON FeatureCollection of areas: keep the cells whose centre is in one")
    generate.add_argument("--area-property", default="name", help="feature property naming an area")
    generate.add_argument("--area-level", default="community", choices=HIERARCHY_LEVELS)
    generate.add_argument("--population", type=int, default=0, help="residents per grid (default 0: unknown)")
