"""The published public-safety index (平安指数, "the PM2.5 way"): daily, weekly and monthly scores per
community and per police station, ranked, with the change on the previous period and the flagged list.

The method is in docs/risk-index.md ("The published index") and deploy/config/published-index.toml. Pure
(config, periods, weights, scores, ranks, flags): the aggregation SQL lives in :mod:`pingan.store.published`
and :func:`pingan.publishing.publish` runs one publication against ClickHouse.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pingan.config_files import read_toml
from pingan.errors import ConfigError
from pingan.index.levels import UNIT_LEVELS, Level
from pingan.index.scoring import TypeWeights

__all__ = [
    "PERIOD_KINDS",
    "FlagDiff",
    "FlagRule",
    "Period",
    "PublishedConfig",
    "PublishedUnit",
    "Scored",
    "UnitInfo",
    "baseline_rate",
    "build_units",
    "competition_ranks",
    "flag_diff",
    "flagged_units",
    "load_config",
    "parse_config",
    "period_containing",
    "ratio_score",
    "score_units",
]

PERIOD_KINDS: Final = ("day", "week", "month")
PER_RESIDENTS: Final = 10_000

Counts = Mapping[tuple[str, str, int], int]  # (source, type, severity) -> distinct events


# --- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagRule:
    worst_n: int
    below_score: float
    min_incidents: int


@dataclass(frozen=True)
class PublishedConfig:
    version: str
    timezone: str
    min_population: int
    severity_multiplier: Mapping[int, float]
    sources: Mapping[str, TypeWeights]
    baseline_periods: Mapping[str, int]
    breakpoints: tuple[tuple[float, float], ...]
    green: float
    yellow: float
    orange: float
    flags: Mapping[str, FlagRule]  # published unit level -> who wears the hat

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def unit_levels(self) -> tuple[str, ...]:
        return tuple(self.flags)

    @property
    def counted_sources(self) -> tuple[str, ...]:
        return tuple(sorted(self.sources))

    def event_weight(self, source: str, event_type: str, severity: int) -> float:
        weights = self.sources.get(source)
        if weights is None:
            return 0.0
        return weights.weight(event_type) * self.severity_multiplier.get(severity, 1.0)

    def band(self, score: float) -> str:
        # Higher is safer here (a score out of 100, as published): green at the top, red below orange.
        if score >= self.green:
            return Level.GREEN.value
        if score >= self.yellow:
            return Level.YELLOW.value
        if score >= self.orange:
            return Level.ORANGE.value
        return Level.RED.value


def _score_breakpoints(raw: Any) -> tuple[tuple[float, float], ...]:
    try:
        points = tuple((float(x), float(y)) for x, y in raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"score.breakpoints must be [[ratio, score], ...]: {exc}") from None
    if len(points) < 2 or points[0] != (0.0, 100.0):
        raise ConfigError("score.breakpoints must start at [0, 100] and have at least two points")
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if not (x1 > x0 and y1 < y0):
            raise ConfigError("score.breakpoints: ratios must increase and scores decrease strictly")
    if points[-1][1] < 0:
        raise ConfigError("score.breakpoints: scores must stay within 0-100")
    return points


def parse_config(document: Mapping[str, Any]) -> PublishedConfig:
    """Build and check a PublishedConfig from a parsed TOML document."""
    try:
        timezone = str(document["timezone"])
        sources = {
            str(name): TypeWeights(
                float(body.get("default_weight", 1.0)),
                {str(k): float(v) for k, v in body.get("type_weights", {}).items()},
            )
            for name, body in document["sources"].items()
        }
        baseline = {str(k): int(v) for k, v in document["baseline_periods"].items()}
        bands = document["bands"]
        flags = {
            str(level): FlagRule(int(rule["worst_n"]), float(rule["below_score"]), int(rule["min_incidents"]))
            for level, rule in document["flag"].items()
        }
        config = PublishedConfig(
            version=str(document["version"]),
            timezone=timezone,
            min_population=int(document["min_population"]),
            severity_multiplier={int(k): float(v) for k, v in document["severity_multiplier"].items()},
            sources=sources,
            baseline_periods=baseline,
            breakpoints=_score_breakpoints(document["score"]["breakpoints"]),
            green=float(bands["green"]),
            yellow=float(bands["yellow"]),
            orange=float(bands["orange"]),
            flags=flags,
        )
    except KeyError as exc:
        raise ConfigError(f"published index config is missing {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"published index config: {exc}") from None
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"published index config: unknown time zone {timezone!r}") from None
    if not sources:
        raise ConfigError("published index config: at least one source must count")
    if set(baseline) != set(PERIOD_KINDS) or min(baseline.values()) < 1:
        raise ConfigError(f"baseline_periods must give {', '.join(PERIOD_KINDS)}, each at least 1")
    if not 0 < config.orange < config.yellow < config.green <= 100:
        raise ConfigError("bands must satisfy 0 < orange < yellow < green <= 100")
    if not flags or not set(flags) <= set(UNIT_LEVELS):
        raise ConfigError(f"flag.<level> tables must name unit levels among {', '.join(UNIT_LEVELS)}")
    if any(rule.worst_n < 0 or rule.min_incidents < 0 for rule in flags.values()) or config.min_population < 1:
        raise ConfigError("worst_n and min_incidents must be >= 0 and min_population >= 1")
    return config


def load_config(path: Path) -> PublishedConfig:
    return parse_config(read_toml(path, "published index config"))


# --- periods ------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Period:
    """Local calendar dates [start, end) of one day, ISO week or month."""

    kind: str
    start: date
    end: date

    def previous(self) -> Period:
        return period_containing(self.kind, self.start - timedelta(days=1))

    def back(self, periods: int) -> Period:
        """The period ``periods`` before this one (0 = this one)."""
        period = self
        for _ in range(periods):
            period = period.previous()
        return period

    def utc_bounds(self, zone: ZoneInfo) -> tuple[int, int]:
        """[start, end) as epoch seconds: local midnights, so a Beijing day is 16:00-16:00 UTC."""
        start = datetime.combine(self.start, time(0), tzinfo=zone)
        end = datetime.combine(self.end, time(0), tzinfo=zone)
        return int(start.timestamp()), int(end.timestamp())

    def contains(self, day: date) -> bool:
        return self.start <= day < self.end


def period_containing(kind: str, day: date) -> Period:
    if kind == "day":
        return Period(kind, day, day + timedelta(days=1))
    if kind == "week":
        start = day - timedelta(days=day.weekday())  # ISO weeks start on Monday
        return Period(kind, start, start + timedelta(days=7))
    if kind == "month":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return Period(kind, start, end)
    raise ValueError(f"period kind {kind!r} is not one of {', '.join(PERIOD_KINDS)}")


def last_complete_period(kind: str, now: datetime, zone: ZoneInfo) -> Period:
    """The newest period that has ended by ``now`` (local time): yesterday, last week, last month."""
    return period_containing(kind, now.astimezone(zone).date()).previous()


# --- scoring ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitInfo:
    unit_id: str
    name: str
    district_id: str
    population: int


@dataclass(frozen=True)
class Weighed:
    incidents: int
    weighted: float
    dominant_type: str  # "source/type" contributing most to the weighted count; "" when nothing counted


def weigh(counts: Counts, config: PublishedConfig) -> Weighed:
    incidents = 0
    weighted = 0.0
    by_type: dict[str, float] = {}
    for (source, event_type, severity), n in counts.items():
        if source not in config.sources:
            continue
        incidents += n
        contribution = n * config.event_weight(source, event_type, severity)
        weighted += contribution
        key = f"{source}/{event_type}"
        by_type[key] = by_type.get(key, 0.0) + contribution
    # Ties by name, so the same counts always name the same type.
    dominant = min(by_type.items(), key=lambda item: (-item[1], item[0]), default=("", 0.0))
    return Weighed(incidents, weighted, dominant[0] if dominant[1] > 0 else "")


def rate_per_10k(weighted: float, population: int) -> float:
    return weighted * PER_RESIDENTS / population if population > 0 else 0.0


def baseline_rate(weighted_by_day: Mapping[date, float], population: int, period: Period, periods: int) -> float:
    """A district's expected weighted incidents per 10,000 residents in one period of this kind.

    The mean over the ``periods`` previous periods that had any weighted incident; with no such history
    (a new deployment), the period's own district-wide rate, so units are compared with each other.
    """

    def weighted_in(p: Period) -> float:
        return sum(w for day, w in weighted_by_day.items() if p.contains(day))

    rates = []
    for back in range(1, periods + 1):
        weighted = weighted_in(period.back(back))
        if weighted > 0:
            rates.append(rate_per_10k(weighted, population))
    if rates:
        return sum(rates) / len(rates)
    return rate_per_10k(weighted_in(period), population)


def ratio_score(ratio: float, breakpoints: Sequence[tuple[float, float]]) -> float:
    """Piecewise-linear from the ratio to the baseline to a 0-100 score; flat beyond the last point."""
    if ratio <= 0:
        return breakpoints[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(breakpoints):
        if ratio <= x1:
            return y0 + (ratio - x0) * (y1 - y0) / (x1 - x0)
    return breakpoints[-1][1]


@dataclass(frozen=True)
class Scored:
    unit: UnitInfo
    incidents: int
    weighted: float
    per_10k: float
    baseline_per_10k: float
    ratio: float
    score: float
    level: str
    dominant_type: str


def score_units(
    units: Sequence[UnitInfo],
    counts: Mapping[str, Counts],
    baselines: Mapping[str, float],
    config: PublishedConfig,
) -> list[Scored]:
    """Score every unit for one period against its district's baseline (units without events score 100)."""
    scored = []
    for unit in units:
        weighed = weigh(counts.get(unit.unit_id, {}), config)
        per_10k = rate_per_10k(weighed.weighted, max(unit.population, config.min_population))
        baseline = baselines.get(unit.district_id, 0.0)
        # No baseline means no counted incident anywhere in the district, history included: nothing to rank.
        ratio = per_10k / baseline if baseline > 0 else 0.0
        score = round(ratio_score(ratio, config.breakpoints), 1)
        scored.append(
            Scored(
                unit=unit,
                incidents=weighed.incidents,
                weighted=round(weighed.weighted, 3),
                per_10k=round(per_10k, 3),
                baseline_per_10k=round(baseline, 3),
                ratio=round(ratio, 3),
                score=score,
                level=config.band(score),
                dominant_type=weighed.dominant_type,
            )
        )
    return scored


def competition_ranks(scores: Mapping[str, float]) -> dict[str, int]:
    """1 = highest score (safest); equal scores share a rank and the next rank skips (1, 1, 3)."""
    ordered = sorted(scores.values(), reverse=True)
    first_at: dict[float, int] = {}
    for position, score in enumerate(ordered, start=1):
        first_at.setdefault(score, position)
    return {unit_id: first_at[score] for unit_id, score in scores.items()}


def flagged_units(scored: Iterable[Scored], rule: FlagRule, ceiling: float) -> frozenset[str]:
    """Who wears the hat: enough incidents, and among the ``worst_n`` lowest scores or below the line.

    Only units scoring below ``ceiling`` (the green band; with the shipped breakpoints, worse than their
    district's usual rate) can wear it, so a quiet period does not hand out hats to whoever happens to be
    last. "Among the worst n" counts the eligible units scoring strictly lower, so units tied at the boundary
    are flagged together rather than split by an arbitrary order.
    """
    eligible = [s for s in scored if s.incidents >= max(rule.min_incidents, 1) and s.score < ceiling]
    scores = sorted(s.score for s in eligible)
    return frozenset(
        s.unit.unit_id for s in eligible if s.score < rule.below_score or bisect_left(scores, s.score) < rule.worst_n
    )


@dataclass(frozen=True)
class FlagDiff:
    entered: tuple[str, ...]  # put on the hat this period
    left: tuple[str, ...]  # took it off
    still: tuple[str, ...]  # flagged in both periods


def flag_diff(now: Iterable[str], before: Iterable[str]) -> FlagDiff:
    current, previous = set(now), set(before)
    return FlagDiff(
        tuple(sorted(current - previous)), tuple(sorted(previous - current)), tuple(sorted(current & previous))
    )


def flag_change(flagged: bool, previously_flagged: bool) -> str:
    if flagged:
        return "still" if previously_flagged else "entered"
    return "left" if previously_flagged else ""


@dataclass(frozen=True)
class PublishedUnit:
    """One row of ``published_index``."""

    period: Period
    unit_level: str
    current: Scored
    rank: int
    ranked_units: int
    previous: Scored
    previous_rank: int
    flagged: bool
    previously_flagged: bool
    config_version: str
    timezone: str

    @property
    def change(self) -> float:
        return round(self.current.score - self.previous.score, 1)

    @property
    def rank_change(self) -> int:
        return self.previous_rank - self.rank  # positive: climbed towards the safest

    @property
    def flag_change(self) -> str:
        return flag_change(self.flagged, self.previously_flagged)


def build_units(
    period: Period,
    unit_level: str,
    current: Sequence[Scored],
    previous: Sequence[Scored],
    config: PublishedConfig,
) -> list[PublishedUnit]:
    """Rank both periods, flag both, and pair each unit with its previous period; ordered by rank."""
    rule = config.flags[unit_level]
    ranks = competition_ranks({s.unit.unit_id: s.score for s in current})
    previous_ranks = competition_ranks({s.unit.unit_id: s.score for s in previous})
    flagged_now = flagged_units(current, rule, config.green)
    flagged_before = flagged_units(previous, rule, config.green)
    before = {s.unit.unit_id: s for s in previous}
    units = []
    for item in current:
        unit_id = item.unit.unit_id
        earlier = before.get(unit_id)
        if earlier is None:  # a unit new in the registry: compared with a quiet previous period
            earlier = Scored(item.unit, 0, 0.0, 0.0, 0.0, 0.0, 100.0, config.band(100.0), "")
        units.append(
            PublishedUnit(
                period=period,
                unit_level=unit_level,
                current=item,
                rank=ranks[unit_id],
                ranked_units=len(current),
                previous=earlier,
                previous_rank=previous_ranks.get(unit_id, len(previous) + 1),
                flagged=unit_id in flagged_now,
                previously_flagged=unit_id in flagged_before,
                config_version=config.version,
                timezone=config.timezone,
            )
        )
    units.sort(key=lambda u: (u.rank, u.current.unit.unit_id))
    return units


# --- one publication ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Publication:
    period: Period
    units: Mapping[str, list[PublishedUnit]]  # unit level -> rows, by rank
    grid_units_synced: bool

    def diff(self, unit_level: str) -> FlagDiff:
        rows = self.units[unit_level]
        return flag_diff(
            (u.current.unit.unit_id for u in rows if u.flagged),
            (u.current.unit.unit_id for u in rows if u.previously_flagged),
        )


# --- reading a publication back (the API) -------------------------------------------------------------


def flagged_lists(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Stored rows of one period split into entered / left / still flagged, each worst (lowest score) first."""
    lists: dict[str, list[Mapping[str, Any]]] = {"entered": [], "left": [], "still": []}
    for row in sorted(rows, key=lambda r: (r["score"], r["unit_id"])):
        change = flag_change(bool(row["flagged"]), bool(row["previously_flagged"]))
        if change:
            lists[change].append(row)
    return lists
