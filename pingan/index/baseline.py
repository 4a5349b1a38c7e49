"""What is normal for a grid: the expected weighted count per source and hour of the week. Pure, no I/O.

The estimate shrinks in two steps (empirical Bayes, gamma-Poisson posterior means), so a grid with little
history borrows strength and a grid with a long one speaks for itself:

1. the grid's overall rate of a source: its own weighted count over the history, plus a **prior** worth
   ``grid_prior_hours`` hours, from the grid's type and population (configuration)::

       rate = (history_total + grid_prior_hours * prior) / (history_hours + grid_prior_hours)

2. each hour of the week: the grid's own count in that hour of the week, plus ``cell_prior_weeks`` weeks of
   the grid's rate shaped by the district's hour-of-week profile of the source::

       expected[h] = (history[h] + cell_prior_weeks * rate * profile[h]) / (weeks + cell_prior_weeks)

   and never below the prior's ``minimum`` (nothing is ever expected to be exactly impossible).

Without learned history (a new deployment) every grid gets its prior with a flat profile; a grid added to
the registry after the snapshot gets its prior shaped by the district's profile (a grid that was there and
saw nothing is a different case: its estimate shrinks towards zero, down to the prior's minimum). Learned
baselines are snapshots with a version (``pingan baselines learn``), so two workers replaying the same
events with the same snapshot compute the same index.

Hours of the week are counted in UTC from Monday 00:00; any fixed convention works, since learning and
scoring use the same one.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pingan.errors import ConfigError

HOURS_PER_WEEK = 168
_MONDAY_OFFSET_HOURS = 72  # 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of its week
PRIOR_VERSION = "prior"
_MAX_MEMO = 200_000  # memoised window expectations kept before starting afresh (a few tens of MB at most)


def hour_of_week(epoch_seconds: float) -> int:
    """0 = Monday 00:00-01:00 UTC ... 167 = Sunday 23:00-24:00 UTC."""
    return (int(epoch_seconds // 3600) + _MONDAY_OFFSET_HOURS) % HOURS_PER_WEEK


@dataclass(frozen=True)
class SourcePrior:
    """Expected weighted count per hour of a grid with no history of the source."""

    per_1000_residents: float = 0.0
    by_type: Mapping[str, float] = field(default_factory=dict)  # extra per hour by grid type
    minimum: float = 0.05
    # Sum of squared event weights over sum of weights: how many "standard events" one weighted unit is worth.
    # Poisson surprise is computed on counts in this unit, so heavy single events are not over-trusted.
    unit_weight: float = 1.0

    def rate(self, grid_type: str, population: int) -> float:
        return max(self.minimum, self.per_1000_residents * population / 1000 + self.by_type.get(grid_type, 0.0))


@dataclass(frozen=True)
class BaselineConfig:
    priors: Mapping[str, SourcePrior] = field(default_factory=dict)
    default_prior: SourcePrior = SourcePrior()
    grid_prior_hours: float = 168.0
    cell_prior_weeks: float = 4.0

    def prior(self, source: str) -> SourcePrior:
        return self.priors.get(source, self.default_prior)


def _positive(where: str, value: Any, *, allow_zero: bool = True) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"{where} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return number


def _prior(where: str, raw: Any) -> SourcePrior:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - {"per_1000_residents", "by_type", "minimum", "unit_weight"}
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
    by_type = raw.get("by_type", {})
    if not isinstance(by_type, Mapping):
        raise ConfigError(f"{where}.by_type must be a table of grid type = rate")
    return SourcePrior(
        per_1000_residents=_positive(f"{where}.per_1000_residents", raw.get("per_1000_residents", 0.0)),
        by_type={str(k): _positive(f"{where}.by_type.{k}", v) for k, v in by_type.items()},
        minimum=_positive(f"{where}.minimum", raw.get("minimum", 0.05), allow_zero=False),
        unit_weight=_positive(f"{where}.unit_weight", raw.get("unit_weight", 1.0), allow_zero=False),
    )


def parse_baseline(raw: Mapping[str, Any] | None) -> BaselineConfig:
    """The ``[baseline]`` table of risk-index.toml (absent: a flat prior of ``minimum`` for every source)."""
    if raw is None:
        return BaselineConfig()
    priors = raw.get("priors", {})
    if not isinstance(priors, Mapping):
        raise ConfigError("baseline.priors must be a table of [baseline.priors.SOURCE] sections")
    return BaselineConfig(
        priors={str(name): _prior(f"baseline.priors.{name}", body) for name, body in priors.items()},
        default_prior=_prior("baseline.default_prior", raw.get("default_prior", {})),
        grid_prior_hours=_positive("baseline.grid_prior_hours", raw.get("grid_prior_hours", 168.0), allow_zero=False),
        cell_prior_weeks=_positive("baseline.cell_prior_weeks", raw.get("cell_prior_weeks", 4.0), allow_zero=False),
    )


@dataclass(frozen=True)
class LearnedBaseline:
    """A snapshot of history: weighted counts per (grid, source) and hour of the week over ``weeks`` weeks."""

    version: str
    weeks: float
    cells: Mapping[tuple[str, str], Mapping[int, float]]  # (grid, source) -> {hour of week: weighted sum}
    unit_weights: Mapping[str, float] = field(default_factory=dict)  # per source, learned from the history
    # Per source, the district's weighted count in each hour of the week. None: summed from ``cells``; given
    # when ``cells`` hold only some grids (the API reads one grid's cells, not the whole snapshot).
    district_totals: Mapping[str, Sequence[float]] | None = None
    # Grids that were in the registry while the history was recorded: without a cell they saw nothing, and
    # their estimate shrinks accordingly. A grid neither here nor in ``cells`` is new: it gets its prior.
    grids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GridProfile:
    """What the baseline needs to know about a grid."""

    grid_id: str
    grid_type: str
    population: int


def learn(
    rows: Iterable[tuple[str, str, str, int, int, int]],
    event_weight: Callable[[str, str, int], float],
    *,
    weeks: float,
    version: str,
    grids: Iterable[str] = (),
) -> LearnedBaseline:
    """Aggregate history rows ``(grid, source, type, severity, hour_of_week, events)`` into a snapshot.

    ``event_weight(source, type, severity)`` is the index's weight of one event (IndexConfig.event_weight);
    ``grids`` are the registry's grids at learning time (observed, even those without a single event).
    """
    if weeks <= 0:
        raise ValueError("weeks must be > 0")
    cells: dict[tuple[str, str], dict[int, float]] = {}
    sums: dict[str, list[float]] = {}  # source -> [sum of w, sum of w^2] over events
    for grid_id, source, event_type, severity, how, events in rows:
        weight = event_weight(source, event_type, severity)
        if weight <= 0 or events <= 0:
            continue
        cell = cells.setdefault((grid_id, source), {})
        cell[how] = cell.get(how, 0.0) + weight * events
        total = sums.setdefault(source, [0.0, 0.0])
        total[0] += weight * events
        total[1] += weight * weight * events
    units = {source: w2 / w for source, (w, w2) in sums.items() if w > 0}
    observed = frozenset(grids) | {grid_id for grid_id, _ in cells}
    return LearnedBaseline(version, weeks, cells, units, grids=observed)


class BaselineModel:
    """Expected weighted counts per grid, source and hour of the week, from a snapshot and the priors."""

    def __init__(
        self,
        config: BaselineConfig,
        grids: Iterable[GridProfile],
        learned: LearnedBaseline | None = None,
    ) -> None:
        self.config = config
        self.learned = learned
        self._grids = {grid.grid_id: grid for grid in grids}
        self._profiles: dict[str, tuple[float, ...]] = {}
        # Per (grid, source): 168 doubles in an array (1.3 KB; a tuple of floats is 5.4 KB, and a province has
        # 50,000 grids times its sources).
        self._hourly: dict[tuple[str, str], array[float]] = {}
        self._totals: dict[str, list[float]] = {}
        self._expected: dict[tuple[str, str, int, int, int], float] = {}
        self._observed: frozenset[str] = frozenset()
        if learned is not None:
            self._observed = learned.grids | {grid_id for grid_id, _ in learned.cells}
        if learned is not None and learned.district_totals is not None:
            self._totals = {source: list(totals) for source, totals in learned.district_totals.items()}
        elif learned is not None:
            for (_, source), cell in learned.cells.items():
                totals = self._totals.setdefault(source, [0.0] * HOURS_PER_WEEK)
                for how, weighted in cell.items():
                    totals[how] += weighted

    @property
    def version(self) -> str:
        return self.learned.version if self.learned is not None else PRIOR_VERSION

    def unit_weight(self, source: str) -> float:
        if self.learned is not None and source in self.learned.unit_weights:
            return self.learned.unit_weights[source]
        return self.config.prior(source).unit_weight

    def profile(self, source: str) -> tuple[float, ...]:
        """The district's hour-of-week shape of a source, mean 1 (flat without history)."""
        cached = self._profiles.get(source)
        if cached is not None:
            return cached
        totals = self._totals.get(source)
        if not totals or sum(totals) <= 0:
            profile = (1.0,) * HOURS_PER_WEEK
        else:
            mean = sum(totals) / HOURS_PER_WEEK
            smoothing = 0.1 * mean  # an hour never observed is not impossible
            profile = tuple((t + smoothing) / (mean + smoothing) for t in totals)
        self._profiles[source] = profile
        return profile

    def hourly(self, grid_id: str, source: str) -> Sequence[float]:
        """Expected weighted count per hour, for each hour of the week."""
        key = (grid_id, source)
        cached = self._hourly.get(key)
        if cached is not None:
            return cached
        prior_config = self.config.prior(source)
        grid = self._grids.get(grid_id)
        prior = prior_config.rate(grid.grid_type, grid.population) if grid else prior_config.minimum
        profile = self.profile(source)
        learned = self.learned
        if learned is None or grid_id not in self._observed:
            # No history of this grid (none learned yet, or a grid added since): its prior, shaped by the
            # district's hour-of-week profile when there is one.
            values = array("d", (max(prior_config.minimum, prior * p) for p in profile))
        else:
            cell = learned.cells.get(key, {})
            hours = learned.weeks * HOURS_PER_WEEK
            strength = self.config.grid_prior_hours
            rate = (sum(cell.values()) + strength * prior) / (hours + strength)
            k = self.config.cell_prior_weeks
            values = array("d", (
                max(prior_config.minimum, (cell.get(how, 0.0) + k * rate * profile[how]) / (learned.weeks + k))
                for how in range(HOURS_PER_WEEK)
            ))  # fmt: skip
        self._hourly[key] = values
        return values

    def expected(self, grid_id: str, source: str, bucket_starts: range, bucket_seconds: int) -> float:
        """Expected weighted count over the given buckets (a range of epoch seconds of their starts).

        Memoised: a batch re-scores the same windows several times (window rows, live level, hysteresis).
        """
        key = (grid_id, source, bucket_starts.start, bucket_starts.stop, bucket_seconds)
        cached = self._expected.get(key)
        if cached is not None:
            return cached
        hourly = self.hourly(grid_id, source)
        total = 0.0
        for start in bucket_starts:
            total += hourly[hour_of_week(start)]
        value = total * bucket_seconds / 3600
        if len(self._expected) >= _MAX_MEMO:
            self._expected.clear()
        self._expected[key] = value
        return value
