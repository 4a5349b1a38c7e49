"""SQL of the ``grid_units`` table: the grid registry's grid → unit mapping, for analysts' JOINs.

The registry (deploy/data/grids.json) is the source of truth; :func:`sync` copies it in when it differs.
Reads use ``FINAL``: two syncs running at once each insert the whole table, and the duplicates only merge
away later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pingan.grids import GridRegistry
from pingan.store.client import Executor

TABLE = "grid_units"
COLUMNS = (
    "grid_id", "community_id", "subdistrict_id", "district_id", "police_station_id", "population", "synced_at",
)  # fmt: skip

_CONTENT_SQL = """
SELECT grid_id, community_id, subdistrict_id, district_id, police_station_id, population
FROM grid_units FINAL
ORDER BY grid_id
"""


def registry_rows(registry: GridRegistry) -> list[tuple[Any, ...]]:
    """The table's content for a registry (without synced_at), ordered like :func:`content`."""
    return sorted(
        (g.grid_id, g.community_id, g.subdistrict_id, g.district_id, g.police_station_id, g.population)
        for g in registry.grids
    )


def content(executor: Executor) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in executor.query(_CONTENT_SQL)]


def sync(executor: Executor, registry: GridRegistry, *, now: datetime) -> bool:
    """Make the table hold exactly the registry's grids; returns whether anything had to be written.

    Unchanged content is left alone, so publishing every day rewrites nothing. A change replaces the
    whole table: a grid dropped from the registry must not keep counting residents.
    """
    wanted = registry_rows(registry)
    if content(executor) == wanted:
        return False
    executor.query("TRUNCATE TABLE grid_units")
    synced_at = int(now.timestamp())
    executor.insert(TABLE, COLUMNS, [(*r, synced_at) for r in wanted])
    return True
