"""Response bodies of the roll-up and published-index routes (OpenAPI documentation and test validation;
handlers render with orjson and do not pass through these models)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pingan.api.incident_models import HandlingFigures
from pingan.api.models import GridRisk, Level
from pingan.index.levels import UnitLevel

PeriodKind = Literal["day", "week", "month"]
FlagChange = Literal["entered", "left", "still", ""]


# --- roll-ups ---------------------------------------------------------------------------------------------


class TopGrid(BaseModel):
    grid_id: str
    name: str
    score: float
    level: Level
    dominant_source: str | None


class UnitRisk(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"unit_level": "community", "unit_id": "PA01-C01", "name": "明西社区 Mingxi Community",
                 "parent_id": "PA01", "level": "orange", "weighted_score": 18.4, "worst_score": 112.0, "grids": 12,
                 "population": 6210, "levels": {"green": 10, "yellow": 1, "orange": 1, "red": 0},
                 "top_grids": [{"grid_id": "PA01-C01-G07", "name": "明西社区第07网格", "score": 112.0,
                                "level": "orange", "dominant_source": "call110"}],
                 "as_of": "2026-11-23T14:05:00Z"}
            ]
        }
    )  # fmt: skip

    unit_level: UnitLevel
    unit_id: str
    name: str
    parent_id: str | None
    level: Level = Field(description="the worst level among the unit's grids")
    weighted_score: float = Field(description="population-weighted mean of the unit's grid scores")
    worst_score: float = Field(description="the highest grid score in the unit")
    grids: int = Field(description="grids in the unit")
    population: int = Field(description="residents of those grids")
    levels: dict[Level, int] = Field(description="grids per level; every level is present")
    top_grids: list[TopGrid] = Field(description="the worst grids (level, then score), at most 3; quiet grids never")
    as_of: datetime | None = Field(description="newest assessment among the unit's grids")


class UnitsSummary(BaseModel):
    units: int
    levels: dict[Level, int] = Field(description="units per level; every level is present")
    as_of: datetime | None = Field(description="newest grid assessment behind these units")
    fetched_at: datetime = Field(description="when the API read the grid risk (shared with /v1/grids/risk)")


class UnitsRiskResponse(BaseModel):
    unit_level: UnitLevel
    summary: UnitsSummary
    units: list[UnitRisk] = Field(description="every unit of the level, in registry order")


class UnitRiskDetail(UnitRisk):
    fetched_at: datetime
    grid_risks: list[GridRisk] = Field(description="every grid of the unit with its current risk")


# --- the published index -----------------------------------------------------------------------------------


class IndexUnit(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"unit_id": "PA01-C01", "unit_name": "明西社区 Mingxi Community", "district_id": "PA",
                 "population": 6210, "incidents": 9, "weighted": 13.5, "per_10k": 21.739,
                 "baseline_per_10k": 9.8, "ratio": 2.218, "score": 77.8, "level": "orange", "rank": 58,
                 "ranked_units": 62, "dominant_type": "call110/criminal", "previous_score": 91.2,
                 "previous_rank": 20, "previous_incidents": 3, "change": -13.4, "rank_change": -38,
                 "flagged": True, "previously_flagged": False, "flag_change": "entered"}
            ]
        }
    )  # fmt: skip

    unit_id: str
    unit_name: str
    district_id: str = Field(description="the district holding most of the unit's residents (its baseline)")
    population: int
    incidents: int = Field(description="distinct counted events in the period")
    weighted: float = Field(description="incidents weighted by category and severity")
    per_10k: float = Field(description="weighted incidents per 10,000 residents (population floored)")
    baseline_per_10k: float = Field(description="the district's trailing average of per_10k")
    ratio: float = Field(description="per_10k / baseline_per_10k")
    score: float = Field(description="0-100, 100 = safest")
    level: Level = Field(description="band of the score: >=90 green, >=80 yellow, >=70 orange, else red")
    rank: int = Field(description="1 = safest; equal scores share a rank")
    ranked_units: int
    dominant_type: str = Field(description="source/type contributing most to the weighted count")
    previous_score: float
    previous_rank: int
    previous_incidents: int
    change: float = Field(description="score - previous_score (positive = safer)")
    rank_change: int = Field(description="previous_rank - rank (positive = climbed towards the safest)")
    flagged: bool = Field(description="wears the hat: a high-incidence unit this period")
    previously_flagged: bool
    flag_change: FlagChange = Field(description="entered (hat on), left (hat off), still, or '' (never)")
    handling: HandlingFigures | None = Field(
        default=None, description="the unit's handling of incidents opened in the period (ranking only)"
    )


class IndexPeriod(BaseModel):
    period_kind: PeriodKind
    period_start: date = Field(description="first local day of the period")
    period_end: date = Field(description="first local day after the period")
    unit_level: UnitLevel
    timezone: str
    config_version: str


class IndexResponse(IndexPeriod):
    units: list[IndexUnit] = Field(description="by rank, safest first")


class FlaggedResponse(IndexPeriod):
    entered: list[IndexUnit] = Field(description="put on the hat this period, worst first")
    left: list[IndexUnit] = Field(description="took it off this period, worst first")
    still: list[IndexUnit] = Field(description="flagged in both periods, worst first")
