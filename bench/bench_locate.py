"""Time GridRegistry.locate on the demo district: points inside (random) and far outside.

.venv/bin/python bench/bench_locate.py [path/to/grids.json]
"""

import random
import sys
import time

from pingan.grids import GridRegistry
from pingan.settings import Settings


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else Settings().grid_registry_path
    registry = GridRegistry.load(path)
    x0, y0, x1, y1 = registry.bbox
    rng = random.Random(1)
    inside = []
    while len(inside) < 100_000:
        lon, lat = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if registry.locate(lon, lat) is not None:
            inside.append((lon, lat))
    outside = [(rng.uniform(-180, 180), rng.uniform(-90, 90)) for _ in range(100_000)]
    for label, points in (("inside the district", inside), ("far outside", outside)):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for lon, lat in points:
                registry.locate(lon, lat)
            best = min(best, time.perf_counter() - start)
        print(f"{len(registry)} grids, {label}: {best / len(points) * 1e6:.2f} µs per locate")


if __name__ == "__main__":
    main()
