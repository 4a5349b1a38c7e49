"""Unit scopes: a key limited to a district, subdistrict, community or police station sees only its grids.

The keys file gives a ``[[client]]`` an optional ``scope`` (a unit id of the grid registry). Every read that
names grids (the map, shapes, a grid, its history and baseline, hot spots, roll-ups, the published index,
alerts and incidents) answers for the scope's grids only, and actions are accepted for them only. A district
key sees its whole district; an unscoped key (and open read) sees everything.

:class:`ScopeIndex` resolves a unit to its grids once and checks, at start-up, that every scope in the keys
file names a unit of the registry (a key whose scope does not sees no grid, and the log says so).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pingan.api.conditional import Rendered
from pingan.api.errors import ApiError
from pingan.api.ingest_auth import KeyRing
from pingan.api.responses import dumps
from pingan.api.views import shapes_body
from pingan.grids import GridRegistry
from pingan.index.rollup import DEFAULT_TOP, GridScore, UnitRisk, _roll, members

log = logging.getLogger(__name__)


class Scoped(Protocol):
    """What a scope is read from: a caller (pingan.api.access.Caller, which this module cannot import: access
    imports the ingest routes, which import deps, which import this module)."""

    @property
    def scope(self) -> str: ...


@dataclass(frozen=True)
class Scope:
    unit_id: str
    level: str  # district | subdistrict | community | police_station
    grid_ids: frozenset[str]

    def __contains__(self, grid_id: object) -> bool:
        return grid_id in self.grid_ids


class ScopeIndex:
    """Scopes by unit id, resolved from the registry once each."""

    def __init__(self, registry: GridRegistry) -> None:
        self._registry = registry
        self._scopes: dict[str, Scope] = {}
        self._shapes: dict[str, tuple[Rendered, bytes]] = {}
        self._lock = threading.Lock()

    def check(self, ring: KeyRing) -> list[str]:
        """Log, and return, the keys whose scope is not a unit of the registry: they see no grid at all (a
        typo in the keys file must not widen a centre's view to everything, nor stop every other centre)."""
        unknown = [p.name for _, p in ring.entries if p.scope and self._registry.unit(p.scope) is None]
        for _, producer in ring.entries:
            if producer.name in unknown:
                log.warning(
                    "keys file: client %r has scope %r, which is not a unit of the grid registry: it sees no grid",
                    producer.name, producer.scope,
                )  # fmt: skip
        return unknown

    def get(self, unit_id: str) -> Scope:
        scope = self._scopes.get(unit_id)
        if scope is None:
            unit = self._registry.unit(unit_id)
            level = unit.level if unit is not None else "unknown"  # not in the registry: no grid (check())
            scope = Scope(unit_id, level, frozenset(g.grid_id for g in self._registry.grids_in(unit_id)))
            with self._lock:
                self._scopes[unit_id] = scope
        return scope

    def shapes(self, scope: Scope) -> tuple[Rendered, bytes]:
        """The scope's polygons (GET /v1/grids/shapes) rendered and gzipped once, as the full map's are."""
        found = self._shapes.get(scope.unit_id)
        if found is None:
            body = shapes_body(self._registry)
            grids = [grid for grid in body["grids"] if grid["grid_id"] in scope.grid_ids]
            identity = dumps({"count": len(grids), "grids": grids})
            tag = f'"shapes-{hashlib.blake2b(identity, digest_size=8).hexdigest()}"'
            rendered = Rendered(identity, tag)
            found = (rendered, rendered.gzip())
            with self._lock:
                self._shapes[scope.unit_id] = found
        return found

    def of(self, caller: Scoped | None) -> Scope | None:
        """The caller's scope; None when it sees every grid."""
        if caller is None or not caller.scope:
            return None
        return self.get(caller.scope)


def visible(scope: Scope | None, grid_id: str) -> bool:
    return scope is None or grid_id in scope


def require_grid(scope: Scope | None, grid_id: str) -> None:
    """403 ``out_of_scope`` for a grid outside the caller's scope (after the caller's 404 check for unknown ones)."""
    if not visible(scope, grid_id):
        assert scope is not None
        raise ApiError(403, "out_of_scope", f"grid {grid_id!r} is outside this key's scope ({scope.unit_id})",
                       "grid_id")  # fmt: skip


def only_visible(items: Iterable[Mapping[str, Any]], scope: Scope | None, key: str = "grid_id") -> list[Any]:
    """The items (dicts with a grid id under ``key``) inside the scope."""
    if scope is None:
        return list(items)
    return [item for item in items if item[key] in scope.grid_ids]


def roll_up_in_scope(
    registry: GridRegistry, scores: Mapping[str, GridScore], unit_level: str, scope: Scope
) -> list[UnitRisk]:
    """The roll-ups of the units that share grids with the scope, from those grids only: a community key
    asking for subdistricts sees its own community's part of its subdistrict, nothing of its neighbours."""
    found = []
    for unit_id, grids in members(registry, unit_level).items():
        inside: Sequence = [grid for grid in grids if grid.grid_id in scope.grid_ids]
        if inside:
            found.append(_roll(registry, unit_level, unit_id, inside, scores, DEFAULT_TOP))
    return found


def units_touching(registry: GridRegistry, unit_level: str, scope: Scope) -> frozenset[str]:
    """Ids of the units of ``unit_level`` with at least one grid in the scope."""
    return frozenset(
        unit_id
        for unit_id, grids in members(registry, unit_level).items()
        if any(grid.grid_id in scope.grid_ids for grid in grids)
    )
