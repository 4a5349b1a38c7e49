"""Pure functions that turn the registry and store rows into API bodies (no I/O, unit-tested)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pingan.grids import Grid, GridRegistry
from pingan.index.baseline import HOURS_PER_WEEK, BaselineModel
from pingan.index.levels import LEVELS, Level
from pingan.index.scoring import IndexConfig
from pingan.index.spatial import SpatialConfig, shown_level, spatial_lift
from pingan.producers.adapters.base import redact, scrub_text

GREEN = Level.GREEN.value


def close_ring(polygon: Sequence[tuple[float, float]]) -> list[list[float]]:
    """A GeoJSON linear ring: [lon, lat] positions with the first repeated at the end (RFC 7946 3.1.6)."""
    ring = [[lon, lat] for lon, lat in polygon]
    if ring and ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return ring


def grid_risk(grid: Grid, row: Mapping[str, Any] | None) -> dict[str, Any]:
    """A grid's current risk; a grid with no risk on record has had no events: green, score 0.

    ``score`` and ``level`` are what the map shows; here they are the grid's own (``own_score``,
    ``own_level``) until :func:`apply_spatial` lifts them. ``spatial`` is None without the spatial term.
    """
    base = {
        "grid_id": grid.grid_id,
        "name": grid.name,
        "community_id": grid.community_id,
        "subdistrict_id": grid.subdistrict_id,
        "police_station_id": grid.police_station_id,
    }
    if row is None:
        return {**base, "level": GREEN, "score": 0.0, "as_of": None, "dominant_source": None,
                "window_events": 0, "config_version": None, "own_score": 0.0, "own_level": GREEN,
                "spatial": None}  # fmt: skip
    score = float(row["score"])
    return {
        **base,
        "level": row["level"],
        "score": score,
        "as_of": row["as_of"],
        "dominant_source": row["dominant_source"] or None,
        "window_events": int(row["window_events"]),
        "config_version": row["config_version"] or None,
        "own_score": score,
        "own_level": row["level"],
        "spatial": None,
    }


def apply_spatial(
    items: Sequence[dict[str, Any]], registry: GridRegistry, config: SpatialConfig, levels: IndexConfig
) -> None:
    """Lift, in place, the shown score and level of grids whose neighbours are hot too (pingan/index/spatial.py).

    Here and not in the worker because the statistics need every grid and its neighbours, which one worker
    partition does not have. ``items`` must be every grid of the registry: a grid left out would count as
    missing, not as quiet, and change the district's mean and spread.
    """
    scores = {item["grid_id"]: item["own_score"] for item in items}
    neighbours = {grid.grid_id: grid.neighbours for grid in registry.grids}
    lifts = spatial_lift(scores, neighbours, config, levels)
    for item in items:
        lift = lifts[item["grid_id"]]
        item["spatial"] = {
            "gi_star_z": round(lift.gi_star_z, 3),
            "gi_z": round(lift.gi_z, 3),
            "hot_neighbours": lift.hot_neighbours,
            "lift": lift.lift,
        }
        item["score"] = lift.score
        item["level"] = shown_level(item["own_level"], lift)


@dataclass(frozen=True)
class RiskSnapshot:
    """One read of ``risk_latest`` joined to the registry; shared by every request until it expires."""

    fetched_at: datetime
    grids: tuple[dict[str, Any], ...]  # registry order
    by_id: Mapping[str, dict[str, Any]]
    unregistered: int  # risk rows for grid ids the registry does not know (a stale or foreign registry)
    # Identifies what the map shows (api/snapshot.py); the ETag of every body rendered from the snapshot.
    version: int = 0
    _rendered: dict[Any, bytes] = field(default_factory=dict, repr=False, compare=False)
    _render_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def cached(self, key: Any) -> bytes | None:
        """The body already rendered for ``key`` (a dict read: safe without the lock), or None."""
        return self._rendered.get(key)

    def rendered(self, key: Any, render: Callable[[], bytes], max_entries: int = 64) -> bytes:
        """A body rendered once per snapshot: every dashboard polling the same view gets the same bytes."""
        with self._render_lock:
            body = self._rendered.get(key)
            if body is None:
                body = render()
                if len(self._rendered) < max_entries:  # filters are client-chosen: bound the memo
                    self._rendered[key] = body
            return body


def build_snapshot(
    registry: GridRegistry,
    rows: Iterable[Mapping[str, Any]],
    fetched_at: datetime,
    *,
    spatial: SpatialConfig | None = None,
    levels: IndexConfig | None = None,
    version: int = 0,
) -> RiskSnapshot:
    """Every registry grid with its risk; with an enabled ``spatial`` config (and the index ``levels`` it
    colours with), scores and levels are lifted by the spatial term, computed once here for the snapshot."""
    by_grid = {row["grid_id"]: row for row in rows}
    items = [grid_risk(grid, by_grid.get(grid.grid_id)) for grid in registry.grids]
    if spatial is not None and spatial.enabled:
        if levels is None:
            raise ValueError("the spatial term needs the index levels to colour lifted scores")
        apply_spatial(items, registry, spatial, levels)
    grids = tuple(items)
    unregistered = sum(1 for grid_id in by_grid if grid_id not in registry)
    return RiskSnapshot(fetched_at, grids, {g["grid_id"]: g for g in grids}, unregistered, version)


def select(
    items: Iterable[dict[str, Any]], levels: frozenset[str] | None = None, community_id: str | None = None
) -> list[dict[str, Any]]:
    if levels is not None:
        items = (item for item in items if item["level"] in levels)
    if community_id is not None:
        items = (item for item in items if item["community_id"] == community_id)
    return list(items)


def summarize(items: Sequence[Mapping[str, Any]], snapshot: RiskSnapshot) -> dict[str, Any]:
    """Counts per level (every level present, zeros included) and the newest assessment of the items."""
    counts = dict.fromkeys(LEVELS, 0)
    as_of = None
    for item in items:
        counts[item["level"]] = counts.get(item["level"], 0) + 1
        if item["as_of"] is not None and (as_of is None or item["as_of"] > as_of):
            as_of = item["as_of"]
    return {
        "grids": len(items),
        "levels": counts,
        "as_of": as_of,
        "fetched_at": snapshot.fetched_at,
        "unregistered_grids": snapshot.unregistered,
        "version": snapshot.version,
    }


def feature_collection(
    items: Iterable[Mapping[str, Any]], registry: GridRegistry, summary: Mapping[str, Any]
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of grid polygons with the risk as properties.

    ``summary`` is a foreign member (RFC 7946 6.1): GeoJSON clients ignore it, dashboards read it.
    """
    features = []
    for item in items:
        grid = registry.get(item["grid_id"])
        if grid is None:
            continue
        features.append(
            {
                "type": "Feature",
                "id": grid.grid_id,
                "geometry": {"type": "Polygon", "coordinates": [close_ring(grid.polygon)]},
                "properties": dict(item),
            }
        )
    return {"type": "FeatureCollection", "features": features, "summary": dict(summary)}


def shapes_body(registry: GridRegistry) -> dict[str, Any]:
    """What a map draws once: every grid's ring (6 decimals) with its names and the units it belongs to."""
    grids = [
        {
            "grid_id": grid.grid_id,
            "name": grid.name,
            "community_id": grid.community_id,
            "subdistrict_id": grid.subdistrict_id,
            "district_id": grid.district_id,
            "police_station_id": grid.police_station_id,
            "ring": [[round(lon, 6), round(lat, 6)] for lon, lat in close_ring(grid.polygon)],
        }
        for grid in registry.grids
    ]
    return {"count": len(grids), "grids": grids}


def top_by_score(items: Iterable[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Grids with a positive score, highest first, ties by grid id (the order risk.hotspots uses)."""
    ranked = sorted((item for item in items if item["score"] > 0), key=lambda item: (-item["score"], item["grid_id"]))
    return ranked[:limit]


def grid_info(grid: Grid) -> dict[str, Any]:
    return {
        "grid_id": grid.grid_id,
        "name": grid.name,
        "grid_type": grid.grid_type,
        "population": grid.population,
        "households": grid.households,
        "area_km2": round(grid.area_km2, 4),
        "district_id": grid.district_id,
        "subdistrict_id": grid.subdistrict_id,
        "community_id": grid.community_id,
        "police_station_id": grid.police_station_id,
        "centroid": list(grid.centroid),
        "bbox": list(grid.bbox),
    }


def redacted_letter(letter: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """A dead letter with personal identifiers in its raw record and reason pseudonymised or masked, the
    same way producers treat what they dead-letter (producers/adapters/base.py)."""
    raw = letter["raw"]
    cleaned = redact(raw.encode("utf-8", errors="replace"), key).decode("utf-8", errors="replace")
    return {**letter, "raw": cleaned, "reason": scrub_text(letter["reason"])}


def baseline_body(model: BaselineModel, grid_id: str, index: IndexConfig) -> dict[str, Any]:
    """What the baseline expects of a grid, per source of the index and hour of the week."""
    sources = []
    for source in sorted(index.sources):
        hourly = model.hourly(grid_id, source)
        sources.append(
            {
                "source": source,
                "unit_weight": round(model.unit_weight(source), 4),
                "mean_per_hour": round(sum(hourly) / HOURS_PER_WEEK, 4),
                "peak_hour_of_week": max(range(HOURS_PER_WEEK), key=hourly.__getitem__),
                "expected_per_hour": [round(value, 4) for value in hourly],
            }
        )
    return {"grid_id": grid_id, "baseline_version": model.version, "config_version": index.version, "sources": sources}
