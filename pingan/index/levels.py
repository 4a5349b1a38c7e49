"""The four colours and the unit levels, defined once for the worker, the API, the CLI and the SQL."""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal, get_args


class Level(StrEnum):
    """A grid's colour (四色预警), mildest first: the declaration order is the rank."""

    GREEN = "green"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"

    @property
    def rank(self) -> int:
        return _LEVEL_RANK[self]


_LEVEL_RANK: Final = {level: rank for rank, level in enumerate(Level)}

# The same colours as a type for the API's models (pydantic renders a Literal as a plain string enum).
LevelName = Literal["green", "yellow", "orange", "red"]
LEVELS: Final[tuple[str, ...]] = tuple(level.value for level in Level)  # mildest first
# Escalations into these levels, and steps down from them, are alerts.
ALERT_LEVELS: Final = (Level.ORANGE, Level.RED)


def rank_of(level: str) -> int:
    """The rank of a stored level name; "" (no risk on record) and names this version does not know rank as
    green, as an unassessed grid is green."""
    try:
        return Level(level).rank
    except ValueError:
        return 0


# Units the grids roll up into (the published index is per police station and per community).
UnitLevel = Literal["community", "subdistrict", "district", "police_station"]
UNIT_LEVELS: Final[tuple[str, ...]] = get_args(UnitLevel)
