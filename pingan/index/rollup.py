"""Roll-ups: the risk of a community, subdistrict, district or police station from the risk of its grids.

The method (docs/risk-index.md, "Roll-ups"), for every unit of a level:

- ``level``: the worst level among its grids. A unit is red as soon as one of its grids is red, because
  a command centre must never see an incident averaged away by quiet neighbours.
- ``weighted_score``: the population-weighted mean of its grid scores, i.e. the risk an average resident
  of the unit lives with. When none of its grids has residents on record, the plain mean.
- ``worst_score``: the highest grid score. Both scores are reported, named, so nobody has to guess which
  one a number is.
- ``levels``: how many of its grids are at each level, and ``top_grids``: its worst grids (worst level
  first, then highest score, then grid id), which say where to look.

A grid without an assessment is green with score 0, as on the grid map. Pure functions, no I/O: the API
rolls up its cached grid risks on request, ``pingan rollup`` rolls up ``risk_latest`` into ``unit_risk``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pingan.grids import Grid, GridRegistry
from pingan.index.levels import LEVELS, UNIT_LEVELS, Level, rank_of

__all__ = [
    "LEVELS",
    "ROLLUP_LEVELS",
    "GridScore",
    "TopGrid",
    "UnitRisk",
    "members",
    "roll_up",
    "roll_up_unit",
    "scores_from_rows",
]

ROLLUP_LEVELS: Final = UNIT_LEVELS
DEFAULT_TOP: Final = 3


@dataclass(frozen=True, slots=True)
class GridScore:
    """The current risk of one grid, as far as a roll-up needs it."""

    score: float
    level: str
    as_of: datetime | None = None
    dominant_source: str | None = None


_UNASSESSED: Final = GridScore(0.0, Level.GREEN.value)


@dataclass(frozen=True, slots=True)
class TopGrid:
    grid_id: str
    name: str
    score: float
    level: str
    dominant_source: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "grid_id": self.grid_id,
            "name": self.name,
            "score": self.score,
            "level": self.level,
            "dominant_source": self.dominant_source,
        }


@dataclass(frozen=True, slots=True)
class UnitRisk:
    unit_level: str
    unit_id: str
    name: str
    parent_id: str | None
    level: str  # the worst grid level
    weighted_score: float  # population-weighted mean of the grid scores
    worst_score: float  # the highest grid score
    grids: int
    population: int
    levels: Mapping[str, int]  # grids per level, every level present
    top_grids: tuple[TopGrid, ...]
    as_of: datetime | None  # newest assessment among the unit's grids

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_level": self.unit_level,
            "unit_id": self.unit_id,
            "name": self.name,
            "parent_id": self.parent_id,
            "level": self.level,
            "weighted_score": self.weighted_score,
            "worst_score": self.worst_score,
            "grids": self.grids,
            "population": self.population,
            "levels": dict(self.levels),
            "top_grids": [top.as_dict() for top in self.top_grids],
            "as_of": self.as_of,
        }


def scores_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, GridScore]:
    """Grid scores from ``risk_latest`` rows or API grid items (both have grid_id, score, level, ...).

    API items carry the spatial lift in score/level and the grid's own values in own_score/own_level: roll-ups
    use the own values, so the live roll-up and the stored ``pingan rollup`` snapshot agree.
    """
    return {
        row["grid_id"]: GridScore(
            float(row.get("own_score", row["score"])),
            str(row.get("own_level", row["level"])),
            row.get("as_of"),
            row.get("dominant_source") or None,
        )
        for row in rows
    }


def _check_level(unit_level: str) -> str:
    if unit_level not in ROLLUP_LEVELS:
        raise ValueError(f"unit level {unit_level!r} is not one of {', '.join(ROLLUP_LEVELS)}")
    return unit_level


def members(registry: GridRegistry, unit_level: str) -> dict[str, list[Grid]]:
    """The grids of every unit of a level, units in registry order.

    Units come from the registry's unit list, then any unit id that only the grids name (a registry of bare
    grids has no unit list), sorted; a listed unit without grids is kept with none.
    """
    attribute = f"{_check_level(unit_level)}_id"
    grouped: dict[str, list[Grid]] = {unit.unit_id: [] for unit in registry.units[unit_level]}
    extra: dict[str, list[Grid]] = {}
    for grid in registry.grids:
        unit_id = getattr(grid, attribute)
        (grouped if unit_id in grouped else extra).setdefault(unit_id, []).append(grid)
    for unit_id in sorted(extra):
        grouped[unit_id] = extra[unit_id]
    return grouped


def _roll(
    registry: GridRegistry,
    unit_level: str,
    unit_id: str,
    grids: Sequence[Grid],
    scores: Mapping[str, GridScore],
    top: int,
) -> UnitRisk:
    unit = registry.unit(unit_id)
    counts = dict.fromkeys(LEVELS, 0)
    population = 0
    weighted_sum = 0.0
    plain_sum = 0.0
    worst_score = 0.0
    worst_rank = 0
    as_of: datetime | None = None
    ranked: list[tuple[int, float, str, Grid, GridScore]] = []
    for grid in grids:
        risk = scores.get(grid.grid_id, _UNASSESSED)
        rank = rank_of(risk.level)  # a level this module does not know counts as green's rank
        counts[risk.level] = counts.get(risk.level, 0) + 1
        population += grid.population
        weighted_sum += grid.population * risk.score
        plain_sum += risk.score
        worst_score = max(worst_score, risk.score)
        worst_rank = max(worst_rank, rank)
        if risk.as_of is not None and (as_of is None or risk.as_of > as_of):
            as_of = risk.as_of
        ranked.append((-rank, -risk.score, grid.grid_id, grid, risk))
    # A unit of shops and offices may have no residents on record: then every grid counts the same.
    weighted = weighted_sum / population if population > 0 else (plain_sum / len(grids) if grids else 0.0)
    ranked.sort(key=lambda item: item[:3])
    tops = tuple(
        TopGrid(grid.grid_id, grid.name, risk.score, risk.level, risk.dominant_source)
        for _, _, _, grid, risk in ranked[:top]
        if risk.score > 0 or rank_of(risk.level) > 0
    )
    return UnitRisk(
        unit_level=unit_level,
        unit_id=unit_id,
        name=unit.name if unit is not None else unit_id,
        parent_id=unit.parent_id if unit is not None else None,
        level=LEVELS[worst_rank],
        weighted_score=round(weighted, 1),
        worst_score=round(worst_score, 1),
        grids=len(grids),
        population=population,
        levels=counts,
        top_grids=tops,
        as_of=as_of,
    )


def roll_up(
    registry: GridRegistry, scores: Mapping[str, GridScore], unit_level: str, *, top: int = DEFAULT_TOP
) -> list[UnitRisk]:
    """Every unit of ``unit_level`` (registry order) with its rolled-up risk; ``top`` worst grids each."""
    return [
        _roll(registry, unit_level, unit_id, grids, scores, top)
        for unit_id, grids in members(registry, unit_level).items()
    ]


def roll_up_unit(
    registry: GridRegistry,
    scores: Mapping[str, GridScore],
    unit_level: str,
    unit_id: str,
    *,
    top: int = DEFAULT_TOP,
) -> UnitRisk | None:
    """One unit's risk, or None when no unit of that level has this id."""
    grids = members(registry, unit_level).get(unit_id)
    if grids is None:
        return None
    return _roll(registry, unit_level, unit_id, grids, scores, top)
