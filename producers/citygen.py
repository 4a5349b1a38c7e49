"""Generate the demo district 平安区 (Pingan District): grids, hierarchy, police stations -> ``grids.json``.

The district is fictional but sized like the real one in ``/work/shared/domain.md``: 468 km², a county seat
split into two urban subdistricts (街道) and three towns (镇); 15 urban communities (社区), one town-centre
residents' committee per town, 44 villages (村); 709 urban-ish grids and 271 rural grids (980 in all);
608,400 residents; ten police stations (派出所), each covering whole communities of one subdistrict.

Geometry: a square lattice of ~1.14 km cells is cut to an irregular outline around (103.6 E, 31.0 N). Cells
of the county seat are split 3x3 (~380 m grids), cells at its fringe and in the town centres 2x2, rural
cells stay whole. Every cell corner and T-junction is a vertex of a shared fine lattice (1/6 of a cell), and
each vertex is displaced once (a smooth warp plus a deterministic jitter smaller than a quarter of its
shortest edge), so neighbouring grids share their common edge vertex for vertex: no gaps, no overlaps.

Output is a pure function of the seed: ``python -m pingan.producers.citygen`` rewrites ``deploy/data/grids.json``
and ``--check`` verifies the committed file is what the generator produces.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import random
import sys
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pingan.grids import GridRegistry, normalise_ring, ring_area_centroid
from pingan.settings import Settings

SEED = 20261123
CENTER_LON = 103.6
CENTER_LAT = 31.0
AREA_KM2 = 468.0
POPULATION = 608_400
RURAL_GRIDS = 271
URBAN_GRIDS = 709
CITY_CELLS_3X3 = 69  # the county seat, split 3x3 ...
CITY_CELLS_2X2 = 4  # ... and its fringe, split 2x2
TOWN_CELLS = 6  # per town centre, split 2x2: 69*9 + (4 + 3*6)*4 = 709
FINE = 6  # fine lattice steps per cell: divisible by both 2 and 3
URBAN_SUBDISTRICT_COMMUNITIES = (8, 7)
VILLAGES = 44
DISTRICT_ID = "PA"

_KM_PER_DEG_LAT = math.radians(1.0) * 6371.0088
_KM_PER_DEG_LON = _KM_PER_DEG_LAT * math.cos(math.radians(CENTER_LAT))

# Fictional names; (Chinese, pinyin). Real place names are avoided on purpose.
_SUBDISTRICTS = (
    ("安宁街道", "Anning Subdistrict"),
    ("和平街道", "Heping Subdistrict"),
)
_TOWNS = (("松溪镇", "Songxi"), ("金桥镇", "Jinqiao"), ("柳湾镇", "Liuwan"))
_SYLLABLES = (
    ("东", "Dong"), ("西", "Xi"), ("南", "Nan"), ("北", "Bei"), ("新", "Xin"), ("和", "He"), ("安", "An"),
    ("康", "Kang"), ("福", "Fu"), ("兴", "Xing"), ("华", "Hua"), ("明", "Ming"), ("光", "Guang"), ("青", "Qing"),
    ("河", "He"), ("江", "Jiang"), ("山", "Shan"), ("石", "Shi"), ("桥", "Qiao"), ("柳", "Liu"), ("桂", "Gui"),
    ("园", "Yuan"), ("林", "Lin"), ("泉", "Quan"), ("云", "Yun"), ("龙", "Long"), ("凤", "Feng"), ("金", "Jin"),
    ("玉", "Yu"), ("丰", "Feng"), ("盛", "Sheng"), ("永", "Yong"), ("长", "Chang"), ("春", "Chun"), ("松", "Song"),
    ("竹", "Zhu"), ("梅", "Mei"), ("荷", "He"), ("田", "Tian"), ("坝", "Ba"), ("堰", "Yan"), ("湾", "Wan"),
    ("塘", "Tang"), ("顺", "Shun"), ("宁", "Ning"), ("平", "Ping"), ("乐", "Le"), ("瑞", "Rui"), ("祥", "Xiang"),
    ("秀", "Xiu"), ("锦", "Jin"), ("茶", "Cha"), ("花", "Hua"), ("溪", "Xi"), ("沙", "Sha"), ("岭", "Ling"),
)  # fmt: skip

Cell = tuple[int, int]  # coarse lattice cell (column, row)
Vertex = tuple[int, int]  # fine lattice vertex (i, j)


@dataclass
class _Fine:
    """One output grid while it is being built."""

    i0: int
    j0: int
    size: int  # side in fine lattice steps: 6 (rural), 3 (2x2 split) or 2 (3x3 split)
    zone: str  # "city", "town0".."town2", "rural"
    ring: list[Vertex] = field(default_factory=list)
    polygon: tuple[tuple[float, float], ...] = ()
    centroid: tuple[float, float] = (0.0, 0.0)  # km from the lattice origin
    neighbours: set[int] = field(default_factory=set)
    grid_type: str = ""
    subdistrict: str = ""
    community: str = ""
    station: str = ""
    grid_id: str = ""
    name: str = ""
    households: int = 0
    population: int = 0


def _unit_hash(seed: int, *parts: object) -> float:
    """A uniform [0, 1) that depends only on the seed and the parts: independent of generation order."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _components(members: Iterable[int], adjacent: Callable[[int], Iterable[int]]) -> list[list[int]]:
    """Connected components of ``members`` under ``adjacent``, largest first, each sorted."""
    remaining = set(members)
    found: list[list[int]] = []
    for start in sorted(remaining):
        if start not in remaining:
            continue
        remaining.discard(start)
        queue, component = deque([start]), [start]
        while queue:
            for other in adjacent(queue.popleft()):
                if other in remaining:
                    remaining.discard(other)
                    queue.append(other)
                    component.append(other)
        found.append(sorted(component))
    return sorted(found, key=lambda c: (-len(c), c[0]))


class _City:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.cell_km = math.sqrt(AREA_KM2 / (RURAL_GRIDS + CITY_CELLS_3X3 + CITY_CELLS_2X2 + 3 * TOWN_CELLS))
        self.step_km = self.cell_km / FINE
        self.grids: list[_Fine] = []

    # --- layout -------------------------------------------------------------------------------------------

    def _cell_xy(self, cell: Cell) -> tuple[float, float]:
        return ((cell[0] + 0.5) * self.cell_km, (cell[1] + 0.5) * self.cell_km)

    def outline(self) -> list[Cell]:
        """The district's cells: the ones closest to the centre under a lumpy radius (an irregular blob)."""
        phases = [self.rng.uniform(0, 2 * math.pi) for _ in range(3)]

        def radius(theta: float) -> float:
            return (
                1.0
                + 0.17 * math.cos(2 * theta + phases[0])
                + 0.09 * math.cos(3 * theta + phases[1])
                + 0.05 * math.cos(5 * theta + phases[2])
            )

        self.radius = radius
        total = RURAL_GRIDS + CITY_CELLS_3X3 + CITY_CELLS_2X2 + 3 * TOWN_CELLS
        candidates = [(c, r) for c in range(-18, 18) for r in range(-18, 18)]
        ranked = sorted(
            candidates,
            key=lambda cell: (
                math.hypot(*self._cell_xy(cell)) / radius(math.atan2(self._cell_xy(cell)[1], self._cell_xy(cell)[0])),
                cell,
            ),
        )
        cells = sorted(ranked[:total])
        last_x, last_y = self._cell_xy(ranked[total - 1])
        # The outline's distance from the centre in direction theta is about reach_km * radius(theta).
        self.reach_km = math.hypot(last_x, last_y) / radius(math.atan2(last_y, last_x))
        chosen = set(cells)
        # No holes: every cell left out must reach the lattice's edge through other left-out cells.
        outside = {cell for cell in candidates if cell not in chosen}
        reach = deque([(-18, -18)])
        seen = {(-18, -18)}
        while reach:
            c, r = reach.popleft()
            for other in ((c + 1, r), (c - 1, r), (c, r + 1), (c, r - 1)):
                if other in outside and other not in seen:
                    seen.add(other)
                    reach.append(other)
        if seen != outside:
            raise RuntimeError("the district outline has a hole; pick another seed")
        return cells

    def nearest(self, cells: Iterable[Cell], x: float, y: float, count: int, wobble: float = 0.0) -> list[Cell]:
        def key(cell: Cell) -> tuple[float, Cell]:
            cx, cy = self._cell_xy(cell)
            noise = 1.0 + wobble * (2 * _unit_hash(self.seed, "wobble", cell) - 1)
            return (math.hypot(cx - x, cy - y) * noise, cell)

        return sorted(cells, key=key)[:count]

    def layout(self) -> None:
        cells = self.outline()
        self.city_xy = (-0.6 * self.cell_km, 0.4 * self.cell_km)
        city = self.nearest(cells, *self.city_xy, CITY_CELLS_3X3 + CITY_CELLS_2X2, wobble=0.12)
        city_set = set(city)
        self.town_angle0 = self.rng.uniform(0, 2 * math.pi)
        self.town_xy: list[tuple[float, float]] = []
        towns: list[list[Cell]] = []
        taken = set(city_set)
        for k in range(3):
            theta = self.town_angle0 + 2 * math.pi * k / 3
            # Two thirds of the way out: clear of the county seat, with villages all round.
            out = 0.68 * self.reach_km * self.radius(theta)
            xy = (out * math.cos(theta), out * math.sin(theta))
            chosen = self.nearest([c for c in cells if c not in taken], *xy, TOWN_CELLS)
            taken.update(chosen)
            towns.append(chosen)
            self.town_xy.append(xy)
        zone_of: dict[Cell, str] = {cell: "rural" for cell in cells}
        split: dict[Cell, int] = {cell: 1 for cell in cells}
        for rank, cell in enumerate(city):  # city is sorted centre-out: the outermost few are the fringe
            zone_of[cell] = "city"
            split[cell] = 3 if rank < CITY_CELLS_3X3 else 2
        for k, chosen in enumerate(towns):
            for cell in chosen:
                zone_of[cell] = f"town{k}"
                split[cell] = 2
        self.fringe = set(city[CITY_CELLS_3X3:])
        for cell in cells:
            parts = split[cell]
            size = FINE // parts
            for a in range(parts):
                for b in range(parts):
                    self.grids.append(_Fine(cell[0] * FINE + a * size, cell[1] * FINE + b * size, size, zone_of[cell]))
        self.cell_of = {index: (g.i0 // FINE, g.j0 // FINE) for index, g in enumerate(self.grids)}

    # --- geometry -----------------------------------------------------------------------------------------

    def geometry(self) -> None:
        active: set[Vertex] = set()
        for g in self.grids:
            active.update({(g.i0, g.j0), (g.i0 + g.size, g.j0), (g.i0 + g.size, g.j0 + g.size), (g.i0, g.j0 + g.size)})
        for g in self.grids:
            i0, j0, s = g.i0, g.j0, g.size
            sides = (
                [(i0 + k, j0) for k in range(s)],
                [(i0 + s, j0 + k) for k in range(s)],
                [(i0 + s - k, j0 + s) for k in range(s)],
                [(i0, j0 + s - k) for k in range(s)],
            )  # counter-clockwise; each side stops before the next side's first corner
            g.ring = [v for side in sides for v in side if v in active]
        shortest: dict[Vertex, int] = {}
        edges: dict[tuple[Vertex, Vertex], list[int]] = defaultdict(list)
        for index, g in enumerate(self.grids):
            for a, b in zip(g.ring, g.ring[1:] + g.ring[:1], strict=True):
                length = abs(a[0] - b[0]) + abs(a[1] - b[1])
                for v in (a, b):
                    shortest[v] = min(shortest.get(v, FINE), length)
                edges[(min(a, b), max(a, b))].append(index)
        for sharing in edges.values():
            if len(sharing) == 2:
                self.grids[sharing[0]].neighbours.add(sharing[1])
                self.grids[sharing[1]].neighbours.add(sharing[0])
            elif len(sharing) > 2:
                raise RuntimeError("an edge shared by more than two grids")
        warp = [self.rng.uniform(0, 2 * math.pi) for _ in range(4)]
        wavelength = 7.0 * self.cell_km
        amplitude = 0.22 * self.cell_km

        def place(v: Vertex) -> tuple[float, float]:
            x, y = v[0] * self.step_km, v[1] * self.step_km
            # A gentle warp bends the lattice's straight lines; its slope stays far below 1, so nothing folds.
            wx = amplitude * math.sin(2 * math.pi * y / wavelength + warp[0]) * math.cos(x / wavelength + warp[1])
            wy = amplitude * math.sin(2 * math.pi * x / wavelength + warp[2]) * math.cos(y / wavelength + warp[3])
            # Jitter under a quarter of the vertex's shortest edge keeps every ring simple.
            reach = 0.22 * shortest[v] * self.step_km
            jx = reach * (2 * _unit_hash(self.seed, "jx", v) - 1)
            jy = reach * (2 * _unit_hash(self.seed, "jy", v) - 1)
            return x + wx + jx, y + wy + jy

        self.xy = {v: place(v) for v in sorted(active)}
        lonlat = {
            v: (round(CENTER_LON + x / _KM_PER_DEG_LON, 6), round(CENTER_LAT + y / _KM_PER_DEG_LAT, 6))
            for v, (x, y) in self.xy.items()
        }
        for g in self.grids:
            g.polygon = tuple(lonlat[v] for v in g.ring)
            ring_xy = [self.xy[v] for v in g.ring]
            _check_simple(ring_xy)
            g.centroid = _centroid_xy(ring_xy)

    # --- hierarchy ----------------------------------------------------------------------------------------

    def _partition(self, members: Sequence[int], parts: int, tag: str) -> list[list[int]]:
        """Split grids into ``parts`` compact, connected groups (k-means on centroids, then repair)."""
        points = {m: self.grids[m].centroid for m in members}
        # Farthest-point seeding from the north-west-most grid: deterministic and well spread.
        first = min(members, key=lambda m: (points[m][0] - points[m][1], m))
        centres = [points[first]]
        while len(centres) < parts:
            far = max(members, key=lambda m: (min(math.dist(points[m], c) for c in centres), -m))
            centres.append(points[far])
        assign: dict[int, int] = {}
        for _ in range(40):
            assign = {m: min(range(parts), key=lambda k: (math.dist(points[m], centres[k]), k)) for m in members}
            moved = []
            for k in range(parts):
                near = [points[m] for m in members if assign[m] == k]
                moved.append(
                    (sum(p[0] for p in near) / len(near), sum(p[1] for p in near) / len(near)) if near else centres[k]
                )
            if moved == centres:
                break
            centres = moved
        member_set = set(members)
        for _ in range(20):  # move stray pieces to the neighbouring group they touch most
            changed = False
            for k in range(parts):
                own = [m for m in members if assign[m] == k]

                def same_group(m: int, k: int = k) -> Iterable[int]:
                    return (n for n in self.grids[m].neighbours if assign.get(n) == k)

                pieces = _components(own, same_group)
                for piece in pieces[1:]:
                    for m in piece:
                        votes = [assign[n] for n in self.grids[m].neighbours if n in member_set and assign[n] != k]
                        if votes:
                            assign[m] = max(sorted(set(votes)), key=votes.count)
                            changed = True
            if not changed:
                break
        groups = [[m for m in members if assign[m] == k] for k in range(parts)]
        for group in groups:
            if not group or len(_components(group, lambda m: self.grids[m].neighbours)) != 1:
                raise RuntimeError(f"{tag}: could not build {parts} connected groups")
        # North to south, then west to east: stable, readable numbering.
        return sorted(groups, key=lambda grp: (-self._mean(grp)[1], self._mean(grp)[0]))

    def _mean(self, members: Sequence[int]) -> tuple[float, float]:
        return (
            sum(self.grids[m].centroid[0] for m in members) / len(members),
            sum(self.grids[m].centroid[1] for m in members) / len(members),
        )

    def _names(self, count: int) -> list[tuple[str, str]]:
        names: list[tuple[str, str]] = []
        used = {cn for cn, _ in _SUBDISTRICTS} | {cn for cn, _ in _TOWNS}
        while len(names) < count:
            (a_cn, a_en), (b_cn, b_en) = self.rng.sample(_SYLLABLES, 2)
            cn, en = a_cn + b_cn, a_en + b_en.lower()
            if cn not in used:
                used.add(cn)
                names.append((cn, en))
        return names

    def hierarchy(self) -> list[dict[str, Any]]:
        units: list[dict[str, Any]] = [
            {"unit_id": DISTRICT_ID, "name": "平安区 Pingan District", "level": "district", "parent_id": None}
        ]
        community_names = iter(self._names(sum(URBAN_SUBDISTRICT_COMMUNITIES) + VILLAGES + 10))
        city = [i for i, g in enumerate(self.grids) if g.zone == "city"]
        # The two urban subdistricts are the county seat cut along a tilted line through its centre.
        cx, cy = self.city_xy
        nx, ny = math.cos(math.radians(70)), math.sin(math.radians(70))

        def westward(i: int) -> bool:
            x, y = self.grids[i].centroid
            return (x - cx) * nx + (y - cy) * ny < 0

        west = [i for i in city if westward(i)]
        east = [i for i in city if not westward(i)]
        # Towns: wedges around the district centre, one town centre in each.
        town_members: list[list[int]] = [[], [], []]
        for i, g in enumerate(self.grids):
            if g.zone == "city":
                continue
            theta = math.atan2(g.centroid[1], g.centroid[0])
            k = int(((theta - self.town_angle0 + math.pi / 3) % (2 * math.pi)) // (2 * math.pi / 3)) % 3
            town_members[k].append(i)
        station_plan = [3, 2, *self._town_stations(town_members)]  # ten stations
        station_number = 0
        village_quota = self._village_quota(town_members)
        subdistricts = [
            ("PA01", _SUBDISTRICTS[0], west, URBAN_SUBDISTRICT_COMMUNITIES[0], None),
            ("PA02", _SUBDISTRICTS[1], east, URBAN_SUBDISTRICT_COMMUNITIES[1], None),
        ] + [
            (f"PA0{3 + k}", (_TOWNS[k][0], f"{_TOWNS[k][1]} Town"), town_members[k], village_quota[k], k)
            for k in range(3)
        ]
        for number, (sub_id, (sub_cn, sub_en), members, count, town) in enumerate(subdistricts):
            if len(_components(members, lambda m: self.grids[m].neighbours)) != 1:
                raise RuntimeError(f"subdistrict {sub_id} is not connected")
            units.append(
                {"unit_id": sub_id, "name": f"{sub_cn} {sub_en}", "level": "subdistrict", "parent_id": DISTRICT_ID}
            )
            communities: list[tuple[list[int], str, str]] = []
            if town is None:
                for group in self._partition(members, count, sub_id):
                    cn, en = next(community_names)
                    communities.append((group, f"{cn}社区", f"{en} Community"))
            else:
                centre = [m for m in members if self.grids[m].zone == f"town{town}"]
                communities.append((centre, f"{sub_cn[:-1]}场镇社区", f"{_TOWNS[town][1]} Town Centre Community"))
                rural = [m for m in members if self.grids[m].zone == "rural"]
                for group in self._partition(rural, count, sub_id):
                    cn, en = next(community_names)
                    communities.append((group, f"{cn}村", f"{en} Village"))
            community_ids: list[tuple[str, list[int]]] = []
            labels: dict[str, tuple[str, str]] = {}
            for k, (group, cn, en) in enumerate(communities, start=1):
                community_id = f"{sub_id}-C{k:02d}"
                units.append({"unit_id": community_id, "name": f"{cn} {en}", "level": "community", "parent_id": sub_id})
                community_ids.append((community_id, group))
                labels[community_id] = (cn, en)
                for n, m in enumerate(
                    sorted(group, key=lambda m: (-self.grids[m].centroid[1], self.grids[m].centroid[0])), start=1
                ):
                    g = self.grids[m]
                    g.subdistrict, g.community = sub_id, community_id
                    g.grid_id = f"{community_id}-G{n:02d}"
                    g.name = f"{cn}第{n:02d}网格 {en} Grid {n:02d}"
            for covered in self._stations(members, community_ids, station_plan[number]):
                station_number += 1
                station_id = f"PA-PS{station_number:02d}"
                if town is not None and any(c[0] == community_ids[0][0] for c in covered):
                    base_cn, base_en = _TOWNS[town][0].removesuffix("镇"), _TOWNS[town][1]
                else:  # named after its largest community, as stations often are
                    main = max(covered, key=lambda c: (len(c[1]), c[0]))[0]
                    base_cn = labels[main][0].removesuffix("社区").removesuffix("村")
                    base_en = labels[main][1].rsplit(" ", 1)[0]
                units.append(
                    {
                        "unit_id": station_id,
                        "name": f"{base_cn}派出所 {base_en} Police Station",
                        "level": "police_station",
                        "parent_id": DISTRICT_ID,
                    }
                )
                for _, group in covered:
                    for m in group:
                        self.grids[m].station = station_id
        return units

    def _stations(
        self, members: Sequence[int], communities: list[tuple[str, list[int]]], stations: int
    ) -> list[list[tuple[str, list[int]]]]:
        """Whole communities per station: connected runs of communities in bearing order, as even as possible."""
        mx, my = self._mean(members)
        ordered = sorted(
            communities, key=lambda c: (math.atan2(self._mean(c[1])[1] - my, self._mean(c[1])[0] - mx), c[0])
        )
        community_of = {m: cid for cid, group in communities for m in group}
        touching: dict[str, set[str]] = defaultdict(set)
        for cid, group in communities:
            for m in group:
                touching[cid].update(community_of[n] for n in self.grids[m].neighbours if n in community_of)

        def connected(run: Sequence[tuple[str, list[int]]]) -> bool:
            ids = [c[0] for c in run]
            index = {cid: i for i, cid in enumerate(ids)}
            return len(_components(range(len(ids)), lambda i: (index[c] for c in touching[ids[i]] if c in index))) == 1

        def weight(run: Sequence[tuple[str, list[int]]]) -> float:
            # Residents are not assigned yet; a rural grid houses about 1.4 times an urban one.
            return sum(1.4 if self.grids[m].size == FINE else 1.0 for _, group in run for m in group)

        best: tuple[float, list[list[tuple[str, list[int]]]]] | None = None
        n = len(ordered)
        for shift in range(n):
            turned = ordered[shift:] + ordered[:shift]
            for cuts in itertools.combinations(range(1, n), stations - 1):
                bounds = (0, *cuts, n)
                runs = [turned[a:b] for a, b in itertools.pairwise(bounds)]
                if not all(connected(run) for run in runs):
                    continue
                score = max(weight(run) for run in runs)
                if best is None or score < best[0]:
                    best = (score, runs)
        if best is None:
            raise RuntimeError("no connected split of communities into police stations")
        # The town centre's station first, then by bearing: stable numbering.
        first = communities[0][0]
        return sorted(best[1], key=lambda run: (all(c[0] != first for c in run), ordered.index(run[0])))

    def _town_stations(self, town_members: list[list[int]]) -> list[int]:
        # The two largest towns get two stations each, the smallest one.
        order = sorted(range(3), key=lambda k: (-len(town_members[k]), k))
        plan = [1, 1, 1]
        for k in order[:2]:
            plan[k] = 2
        return plan

    def _village_quota(self, town_members: list[list[int]]) -> list[int]:
        rural = [sum(1 for m in members if self.grids[m].zone == "rural") for members in town_members]
        shares = [VILLAGES * r / sum(rural) for r in rural]
        quota = [math.floor(share) for share in shares]
        for k in sorted(range(3), key=lambda k: quota[k] - shares[k])[: VILLAGES - sum(quota)]:  # largest remainders
            quota[k] += 1
        return quota

    # --- types and people ---------------------------------------------------------------------------------

    def types(self) -> dict[str, str]:
        """Grid types, plus proper names for the few landmark grids. Returns {grid_id: landmark name}."""
        landmarks: dict[str, str] = {}
        for g in self.grids:
            g.grid_type = "rural" if g.zone == "rural" else "urban"
        city = [i for i, g in enumerate(self.grids) if g.zone == "city"]
        cx, cy = self.city_xy

        def by_distance(members: Iterable[int], x: float, y: float) -> list[int]:
            return sorted(members, key=lambda m: (math.dist(self.grids[m].centroid, (x, y)), m))

        # Railway station at the county seat's eastern edge; a coach terminal south of the centre.
        split3 = [m for m in city if self.grids[m].size == 2]
        east_edge = max(
            split3, key=lambda m: (self.grids[m].centroid[0] - 0.3 * abs(self.grids[m].centroid[1] - cy), -m)
        )
        station_cell = self.cell_of[east_edge]
        station = sorted(
            (m for m in split3 if self.cell_of[m] == station_cell and (self.grids[m].j0 // 2) % 3 == 1),
            key=lambda m: self.grids[m].i0,
        )
        hub_names = (
            "平安站西广场 Pingan Railway Station West Plaza",
            "平安火车站 Pingan Railway Station",
            "平安站东广场 Pingan Railway Station East Plaza",
        )
        for m, name in zip(station, hub_names, strict=True):
            self.grids[m].grid_type = "transport_hub"
            landmarks[self.grids[m].grid_id] = name
        coach = by_distance(split3, cx, cy - 2.2 * self.cell_km)[0]
        self.grids[coach].grid_type = "transport_hub"
        landmarks[self.grids[coach].grid_id] = "平安客运中心 Pingan Coach Terminal"
        # The commercial core of the county seat, and a market street in each town centre.
        core = [m for m in by_distance(city, cx, cy) if self.grids[m].grid_type == "urban"][:28]
        for m in core:
            self.grids[m].grid_type = "commercial"
        for k, (tx, ty) in enumerate(self.town_xy):
            for m in by_distance([i for i, g in enumerate(self.grids) if g.zone == f"town{k}"], tx, ty)[:2]:
                self.grids[m].grid_type = "commercial"
        # The county seat's fringe cells are its industrial estate.
        for m in city:
            if self.cell_of[m] in self.fringe:
                self.grids[m].grid_type = "industrial"
        # One school zone per urban community (a school and its surroundings).
        by_community: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(self.grids):
            by_community[g.community].append(i)
        for community in sorted(by_community):
            plain = [m for m in by_community[community] if self.grids[m].grid_type == "urban"]
            if plain:
                self.grids[self.rng.choice(plain)].grid_type = "school_zone"
        # A rural industrial park between the county seat and the first town; a scenic area in the hills
        # at the far end of the second town.
        rural = [i for i, g in enumerate(self.grids) if g.zone == "rural"]
        (t0x, t0y), (t1x, t1y) = self.town_xy[0], self.town_xy[1]
        for m in by_distance(rural, (cx + t0x) / 2, (cy + t0y) / 2)[:6]:
            self.grids[m].grid_type = "industrial"
        scenic = by_distance(rural, 1.6 * t1x, 1.6 * t1y)[:5]
        for n, m in enumerate(sorted(scenic, key=lambda m: self.grids[m].grid_id), start=1):
            self.grids[m].grid_type = "scenic"
            landmarks[self.grids[m].grid_id] = f"翠屏山景区第{n}片区 Cuiping Mountain Scenic Area Zone {n}"
        return landmarks

    def people(self) -> None:
        households = {
            "urban": (160, 255),
            "school_zone": (120, 220),
            "commercial": (40, 140),
            "industrial": (30, 90),
            "transport_hub": (0, 30),
        }
        urban_total = 0
        for g in self.grids:
            if g.zone == "rural":
                continue
            low, high = households[g.grid_type]
            g.households = self.rng.randint(low, high)
            g.population = round(g.households * self.rng.uniform(2.6, 3.0))
            urban_total += g.population
        rural = [g for g in self.grids if g.zone == "rural"]
        factor = {"rural": 1.0, "industrial": 0.25, "scenic": 0.35}
        weights = [factor[g.grid_type] * self.rng.uniform(0.65, 1.35) for g in rural]
        share = POPULATION - urban_total
        exact = [share * w / sum(weights) for w in weights]
        counts = [math.floor(e) for e in exact]
        # Largest remainders: the district total is exactly POPULATION.
        for k in sorted(range(len(rural)), key=lambda k: (counts[k] - exact[k], k))[: share - sum(counts)]:
            counts[k] += 1
        for g, count in zip(rural, counts, strict=True):
            g.population = count
            g.households = max(1, round(count / self.rng.uniform(2.9, 3.3))) if count else 0


def _check_simple(ring: Sequence[tuple[float, float]]) -> None:
    """Raise if any two non-adjacent edges of the ring intersect (the generator must never emit that)."""
    n = len(ring)

    def orient(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    for i in range(n):
        a, b = ring[i], ring[(i + 1) % n]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            c, d = ring[j], ring[(j + 1) % n]
            if orient(a, b, c) * orient(a, b, d) < 0 and orient(c, d, a) * orient(c, d, b) < 0:
                raise RuntimeError("a self-intersecting grid polygon")


def _centroid_xy(ring: Sequence[tuple[float, float]]) -> tuple[float, float]:
    area = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(ring, [*ring[1:], ring[0]], strict=True):
        cross = x0 * y1 - x1 * y0
        area += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    return (cx / (3 * area), cy / (3 * area))


def generate(seed: int = SEED) -> dict[str, Any]:
    """The registry document (format ``pingan-grids/1``) for the demo district."""
    city = _City(seed)
    city.layout()
    city.geometry()
    units = city.hierarchy()
    landmarks = city.types()
    city.people()
    by_index = {index: g.grid_id for index, g in enumerate(city.grids)}
    grids = []
    for g in sorted(city.grids, key=lambda g: g.grid_id):
        grids.append(
            {
                "grid_id": g.grid_id,
                "name": landmarks.get(g.grid_id, g.name),
                "grid_type": g.grid_type,
                "population": g.population,
                "households": g.households,
                "district_id": DISTRICT_ID,
                "subdistrict_id": g.subdistrict,
                "community_id": g.community,
                "police_station_id": g.station,
                "polygon": [list(p) for p in g.polygon],
                "neighbours": sorted(by_index[n] for n in g.neighbours),
            }
        )
    level_order = {"district": 0, "subdistrict": 1, "community": 2, "police_station": 3}
    return {
        "format": "pingan-grids/1",
        "name": "平安区 Pingan District (fictional demo district)",
        "generator": {"script": "producers/citygen.py", "seed": seed},
        "center": [CENTER_LON, CENTER_LAT],
        "population": sum(g["population"] for g in grids),
        "units": sorted(units, key=lambda u: (level_order[u["level"]], u["unit_id"])),
        "grids": grids,
    }


def render(document: dict[str, Any]) -> bytes:
    """Stable bytes: one grid or unit per line, so a regenerated file diffs line by line."""

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    head = {k: v for k, v in document.items() if k not in ("units", "grids")}
    lines = [b"{"]
    for key, value in head.items():
        lines.append(b"  " + dumps(key) + b": " + dumps(value) + b",")
    for key in ("units", "grids"):
        lines.append(b"  " + dumps(key) + b": [")
        items = document[key]
        for n, item in enumerate(items):
            lines.append(b"    " + dumps(item) + (b"," if n < len(items) - 1 else b""))
        lines.append(b"  ]" + (b"," if key == "units" else b""))
    lines.append(b"}")
    return b"\n".join(lines) + b"\n"


def _verify(document: dict[str, Any]) -> None:
    """Cheap end-to-end checks on what a registry built from the document will answer."""
    registry = GridRegistry.from_document(orjson.loads(render(document)))
    for grid in registry.grids:
        found = registry.locate(*grid.centroid)
        if found is None or found.grid_id != grid.grid_id:
            raise RuntimeError(f"the centroid of {grid.grid_id} does not locate to it")
    area = sum(ring_area_centroid(normalise_ring(g["polygon"]))[0] for g in document["grids"])
    if abs(area - AREA_KM2) > 0.03 * AREA_KM2:
        raise RuntimeError(f"district area {area:.1f} km² is not about {AREA_KM2}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pingan.producers.citygen", description="Generate the demo district's grids.json"
    )
    parser.add_argument("--out", type=Path, default=None, help="output file (default: the settings' registry path)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--check", action="store_true", help="only verify the file matches what would be generated")
    args = parser.parse_args(argv)
    out: Path = args.out or Settings().grid_registry_path
    document = generate(args.seed)
    _verify(document)
    data = render(document)
    if args.check:
        if not out.exists() or out.read_bytes() != data:
            print(f"{out} is not what producers/citygen.py generates; rerun without --check", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"wrote {out}: {len(document['grids'])} grids, {document['population']} residents, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
