"""The worker's memory and the grid lookup at province sizes: 1,000, 10,000 and 50,000 grids.

    python -m bench.registry_scale --grids 50000 --events-per-grid 4     # one size, a JSON line on stdout

``bench.worker_throughput`` runs one process per size (:func:`measure_scales`), so each starts from a clean
heap. A process generates a province-like registry (:func:`province_registry`), loads it, times
``GridRegistry.locate`` on points inside random grids (and counts the candidate grids its bucket index
tests per point: the work per lookup, apart from the memory caches), then runs the pure pipeline
(pingan.streams.pipeline.process_batch on one PartitionState, the worker's batch sizes, batch records) over a
stream that touches every grid ``--events-per-grid`` times in ``--span`` seconds of event time.

Memory, two ways: what stays reachable, by walking the objects (``retained_mb``: the registry; the
PartitionState; what the baseline model cached while scoring, which lives as long as the worker), and the
growth of the process's resident memory (RSS, /proc) over the pipeline run, which adds what the allocator
kept from the run's transient objects; and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import subprocess
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.workload import as_batch_records, in_process, make_stream, new_state, pipeline_config, run_pipeline
from pingan.gridgen import LabelledPoint, generate_registry
from pingan.grids import GridRegistry
from pingan.settings import Settings

SIZES = (1_000, 10_000, 50_000)
PREFIX = "PV"
_METRES_PER_DEG_LAT = math.radians(1.0) * 6_371_008.8
# The hierarchy of shared/domain.md in square blocks of cells: a community of 16 grids (4 x 4; one sample
# community has 21), a police station of 128, a subdistrict of 256, a district of 1,024 (the demo has 980).
COMMUNITY, STATION_ROWS, SUBDISTRICT, DISTRICT = 4, 8, 16, 32


def province_registry(grids: int, *, cell_metres: float = 500.0) -> dict[str, Any]:
    """A ``pingan-grids/1`` document of ``grids`` square urban grids of ``cell_metres`` in a near-square block,
    with districts, subdistricts, communities and police stations (``pingan.gridgen`` lays the cells)."""
    side = math.ceil(math.sqrt(grids))
    lon0, lat0 = 113.0, 23.0
    dlat = cell_metres / _METRES_PER_DEG_LAT
    dlon = dlat / math.cos(math.radians(lat0 + side * dlat / 2))
    points = []
    for i in range(grids):
        row, column = divmod(i, side)
        labels = {
            "community": f"C{row // COMMUNITY:03d}-{column // COMMUNITY:03d}",
            "police_station": f"P{row // STATION_ROWS:03d}-{column // SUBDISTRICT:03d}",
            "subdistrict": f"S{row // SUBDISTRICT:03d}-{column // SUBDISTRICT:03d}",
        }
        points.append(LabelledPoint(lon0 + (column + 0.5) * dlon, lat0 + (row + 0.5) * dlat, labels))
    # A hair inside the last cell edge, so rounding does not add an empty row or column.
    bbox = (lon0, lat0, lon0 + side * dlon - 1e-9, lat0 + side * dlat - 1e-9)
    document = generate_registry(bbox, cell_metres, name=f"province of {grids:,} grids", prefix=PREFIX,
                                 points=points, population=600)  # fmt: skip
    # gridgen makes the whole box one district; a province has many: each block of DISTRICT x DISTRICT cells.
    district_of: dict[str, str] = {}
    for grid in document["grids"]:
        row, column = (int(part[1:]) for part in grid["grid_id"].split("-")[1:])
        grid["district_id"] = f"{PREFIX}-D{row // DISTRICT:02d}{column // DISTRICT:02d}"
        for level in ("subdistrict_id", "police_station_id"):
            district_of[grid[level]] = grid["district_id"]
    units = [u for u in document["units"] if u["level"] != "district"]
    for unit in units:
        unit["parent_id"] = district_of.get(unit["unit_id"], unit["parent_id"])
    districts = sorted(set(district_of.values()))
    document["units"] = [{"unit_id": d, "name": d, "level": "district", "parent_id": None} for d in districts] + units
    return document


def rss_mb() -> float:
    """This process's resident memory now (VmRSS) in MB."""
    return _status_kb("VmRSS") / 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


_NOT_DATA = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def retained_mb(root: object, counted: set[int]) -> float:
    """MB of the objects reachable from ``root`` not in ``counted`` (ids; updated), classes and code excluded."""
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in counted or isinstance(obj, _NOT_DATA):
            continue
        counted.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total / 2**20


def lookup(registry: GridRegistry, points: int = 100_000) -> tuple[float, float]:
    """Best of three µs per ``locate`` of a point inside a random grid, and the candidate grids per point."""
    rng = random.Random(2)
    inside = []
    for grid in rng.choices(registry.grids, k=points):
        x0, y0, x1, y1 = grid.bbox
        inside.append((rng.uniform(x0, x1), rng.uniform(y0, y1)))
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        for lon, lat in inside:
            registry.locate(lon, lat)
        best = min(best, time.perf_counter() - started)
    # The bucket index's candidates: the work of one locate, which must not grow with the registry.
    candidates = sum(len(registry._index.candidates(lon, lat)) for lon, lat in inside)
    return best / points * 1e6, candidates / points


def measure(grids: int, events_per_grid: int, span_s: float) -> dict[str, float]:
    settings = Settings()
    registry = GridRegistry.from_document(province_registry(grids))
    locate_us, candidates = lookup(registry)
    events = grids * events_per_grid
    messages = make_stream(registry, events, grids=grids, span_s=span_s, every_grid=True)
    records = in_process(as_batch_records(settings, messages))
    config = pipeline_config(settings, registry)
    del messages
    counted: set[int] = set()
    registry_mb = retained_mb(registry, counted)
    baseline_before = retained_mb(config.baseline, set(counted))
    gc.collect()
    before = rss_mb()
    state = new_state(settings, config)
    seconds = run_pipeline(settings, registry, config, records, state, events)
    gc.collect()
    rss_growth = rss_mb() - before
    return {
        "grids": len(registry), "events": events, "span_s": span_s, "registry_mb": registry_mb,
        "state_mb": retained_mb(state, set(counted)),
        "baseline_cache_mb": retained_mb(config.baseline, set(counted)) - baseline_before,
        "rss_growth_mb": rss_growth, "peak_rss_mb": _status_kb("VmHWM") / 1024, "locate_us": locate_us,
        "candidates": candidates, "pipeline_events_per_s": events / seconds,
        "buckets": sum(len(b) for b in state.buckets.values()),
    }  # fmt: skip


def measure_scales(
    sizes: Sequence[int] = SIZES, events_per_grid: int = 2, span_s: float = 600.0
) -> list[dict[str, float]]:
    """One fresh process per registry size (a heap that grew for one size would hide the next one's growth)."""
    found = []
    for grids in sizes:
        done = subprocess.run(
            [sys.executable, "-m", "bench.registry_scale", "--grids", str(grids), "--events-per-grid",
             str(events_per_grid), "--span", str(span_s)], capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"bench.registry_scale --grids {grids} exited {done.returncode}:\n{done.stderr}")
        found.append(json.loads(done.stdout.splitlines()[-1]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, required=True)
    parser.add_argument("--events-per-grid", type=int, default=2)
    parser.add_argument("--span", type=float, default=600.0, help="seconds of event time the stream covers")
    args = parser.parse_args()
    print(json.dumps(measure(args.grids, args.events_per_grid, args.span)))


if __name__ == "__main__":
    main()
