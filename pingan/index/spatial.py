"""The spatial term of the risk index: lift a grid whose neighbours are hot too, so clusters show as clusters.

The worker scores every grid on its own events. A fight that spills over three streets then shows as three
unrelated spots, and the quieter grid in the middle of them (a yellow between two reds) reads as calm. The
Getis-Ord local statistics measure how unusual a grid's neighbourhood is against the whole district; where
the neighbourhood is significantly hot, the grid's score is lifted by a bounded number of points.

Why it is computed outside the worker
    The worker's partitions are keyed by grid, so a partition does not see its grids' neighbours in other
    partitions, and the statistics need the mean and spread of the whole district. The API's map snapshot
    has every grid in view and is computed once per ``api_cache_seconds``, so the term is applied there
    (``pingan.api.views.build_snapshot``). The stored scores, windows and alerts stay the grid's own.

Why Gi drives the lift and Gi* is only reported
    Gi* (the grid counted among its own neighbours) is the usual hot-spot statistic, but a lone red grid
    among quiet ones has a high Gi* from its own score alone. Gi leaves the grid out, so the lift depends on
    the neighbours only: a lone hot grid is never lifted by its own score.

Everything here is pure (no I/O) and plain Python: 980 grids with about four neighbours each take a few
milliseconds, once per snapshot.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pingan.errors import ConfigError
from pingan.index.levels import Level
from pingan.index.scoring import IndexConfig, level_for

__all__ = ["Lift", "SpatialConfig", "getis_ord", "parse_spatial", "shown_level", "spatial_lift"]

# The yellow bound of deploy/config/risk-index.toml: what counts as a hot neighbour when nothing says otherwise.
DEFAULT_HOT_SCORE = 50.0


@dataclass(frozen=True)
class SpatialConfig:
    """The knobs of the ``[spatial]`` table of risk-index.toml (see docs/risk-index-spatial.md)."""

    enabled: bool = True
    # Gi z-score a neighbourhood must exceed before it lifts the grid (1.96: two-sided 5 % under normality).
    z_threshold: float = 1.96
    # Points of lift per unit of Gi z above the threshold.
    points_per_z: float = 10.0
    # Cap on the lift. No more than the narrowest colour band (50) so a grid moves at most one colour.
    max_lift: float = 50.0
    # A grid needs at least this own score to be lifted: a grid with no events is never painted.
    min_own_score: float = 1.0
    # Neighbours with own score >= hot_score needed: one hot neighbour is an edge, not a cluster.
    min_hot_neighbours: int = 2
    # What counts as a hot neighbour (own score); parse_spatial defaults it to the yellow bound.
    hot_score: float = DEFAULT_HOT_SCORE


@dataclass(frozen=True, slots=True)
class Lift:
    """The spatial term of one grid.

    ``score`` is the grid's own score plus ``lift`` (0.1 resolution, like every score) and ``level`` the
    colour of that score alone; the colour shown is :func:`shown_level`, which never lowers the own level.
    """

    gi_star_z: float  # Getis-Ord Gi*: the grid with its neighbours (the hot-spot statistic, reported)
    gi_z: float  # Getis-Ord Gi: the neighbours alone (drives the lift)
    hot_neighbours: int  # neighbours whose own score is at least hot_score
    lift: float  # points added to the own score; 0 when not lifted
    score: float
    level: Level


# --- configuration -----------------------------------------------------------------------------------------


def _number(table: Mapping[str, Any], key: str, default: float, *, minimum: float, strict: bool) -> float:
    value = table.get(key, default)
    # bool is an int in Python; `enabled = true` pasted under the wrong key must not read as 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"spatial.{key} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise ConfigError(f"spatial.{key} must be {bound}, got {value!r}")
    return float(value)


def _default_hot_score(document: Mapping[str, Any]) -> float:
    """The yellow bound of ``[levels]`` when it is a usable number (parse_config reports it otherwise)."""
    levels = document.get("levels")
    yellow = levels.get("yellow") if isinstance(levels, Mapping) else None
    if isinstance(yellow, int | float) and not isinstance(yellow, bool) and math.isfinite(yellow) and yellow > 0:
        return float(yellow)
    return DEFAULT_HOT_SCORE


def parse_spatial(document: Mapping[str, Any]) -> SpatialConfig:
    """The spatial term's config from the risk-index TOML document: its optional ``[spatial]`` table.

    A missing table gives the defaults (the term is on); ``hot_score`` defaults to ``[levels].yellow`` so
    that "hot neighbour" follows the colour bands. Unknown keys are errors: a misspelt knob would otherwise
    be silently ignored.
    """
    default = SpatialConfig(hot_score=_default_hot_score(document))
    table = document.get("spatial")
    if table is None:
        return default
    if not isinstance(table, Mapping):
        raise ConfigError(f"spatial must be a table ([spatial]), got {type(table).__name__}")
    known = [f.name for f in fields(SpatialConfig)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"spatial has unknown keys {', '.join(unknown)} (known: {', '.join(known)})")

    enabled = table.get("enabled", default.enabled)
    if not isinstance(enabled, bool):
        raise ConfigError(f"spatial.enabled must be true or false, got {enabled!r}")
    neighbours = table.get("min_hot_neighbours", default.min_hot_neighbours)
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
        raise ConfigError(f"spatial.min_hot_neighbours must be an integer of at least 1, got {neighbours!r}")
    return SpatialConfig(
        enabled=enabled,
        z_threshold=_number(table, "z_threshold", default.z_threshold, minimum=0.0, strict=False),
        points_per_z=_number(table, "points_per_z", default.points_per_z, minimum=0.0, strict=True),
        max_lift=_number(table, "max_lift", default.max_lift, minimum=0.0, strict=True),
        # > 0, not >= 0: with 0 a grid without a single event could be painted by its neighbours.
        min_own_score=_number(table, "min_own_score", default.min_own_score, minimum=0.0, strict=True),
        min_hot_neighbours=neighbours,
        hot_score=_number(table, "hot_score", default.hot_score, minimum=0.0, strict=True),
    )


# --- the statistics ----------------------------------------------------------------------------------------


def _links(values: Mapping[str, float], neighbours: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Each grid's neighbours that are observations: de-duplicated, itself excluded (w_ii is set apart)."""
    return {
        grid_id: tuple(dict.fromkeys(j for j in neighbours.get(grid_id, ()) if j != grid_id and j in values))
        for grid_id in values
    }


def getis_ord(
    values: Mapping[str, float], neighbours: Mapping[str, Sequence[str]], *, include_self: bool
) -> dict[str, float]:
    """Getis-Ord local z-scores with binary weights: Gi* with ``include_self``, Gi without.

    w_ij = 1 for the grids ``neighbours[i]`` names (ids not in ``values`` are ignored), and w_ii = 1 for Gi*.
    With W_i = Σ_j w_ij, S1_i = Σ_j w_ij² (= W_i for binary weights), x̄ and s the mean and population
    standard deviation of the n values::

        z_i = (Σ_j w_ij x_j − x̄ W_i) / (s · sqrt((n S1_i − W_i²) / (n − 1)))

    Gi, as Getis & Ord (1992) define it, excludes x_i from everything: n becomes n − 1, and x̄ and s are
    those of the other n − 1 values. A z is 0 where it is undefined: s = 0 (the values it compares are all
    equal), no neighbours, or neighbours that are every other grid.
    """
    xs = {grid_id: float(x) for grid_id, x in values.items()}
    return _z_scores(xs, _links(xs, neighbours), include_self=include_self)


def _z_scores(xs: Mapping[str, float], links: Mapping[str, tuple[str, ...]], *, include_self: bool) -> dict[str, float]:
    """:func:`getis_ord` on prepared links, so :func:`spatial_lift` builds them once for both statistics."""
    n = len(xs)
    if n == 0:
        return {}
    mean = math.fsum(xs.values()) / n
    # Sum of squares about the mean, accurate even when the spread is small beside the values.
    squares = math.fsum((x - mean) ** 2 for x in xs.values())
    # Exact equality, not a tolerance: s is 0 exactly when the compared values are all equal.
    counts = Counter(xs.values())
    all_equal = len(counts) == 1
    z: dict[str, float] = {}
    for grid_id, x in xs.items():
        linked = links[grid_id]
        local = sum([xs[j] for j in linked])
        weight = len(linked)
        if include_self:
            local += x
            weight += 1
            m, m_mean, variance = n, mean, squares / n
            constant = all_equal
        else:
            # The other m = n − 1 values: their mean and spread follow from the totals without a second pass.
            m = n - 1
            d = x - mean
            m_mean = mean - d / m if m else 0.0
            variance = (squares - d * d) / m - (d / m) ** 2 if m else 0.0
            constant = all_equal or (len(counts) == 2 and counts[x] == 1)
        spread = m * weight - weight * weight
        if constant or weight == 0 or m < 2 or spread <= 0:
            z[grid_id] = 0.0
            continue
        denominator = math.sqrt(max(variance, 0.0)) * math.sqrt(spread / (m - 1))
        z[grid_id] = (local - m_mean * weight) / denominator if denominator > 0 else 0.0
    return z


def spatial_lift(
    scores: Mapping[str, float],
    neighbours: Mapping[str, Sequence[str]],
    config: SpatialConfig,
    levels: IndexConfig,
) -> dict[str, Lift]:
    """Every grid's spatial term from the own scores of the whole district (grids without events at 0).

    A grid is lifted when its neighbourhood without it is significantly hot (Gi z above ``z_threshold``),
    at least ``min_hot_neighbours`` neighbours are hot themselves, and it has some activity of its own
    (``min_own_score``): lift = min(max_lift, points_per_z × (gi_z − z_threshold)), rounded to 0.1.
    Everything is computed from own scores, never from lifted ones, so the result does not depend on the
    order of the grids and a lift never feeds another. With ``enabled = false`` the statistics are still
    reported and every lift is 0.
    """
    xs = {grid_id: float(x) for grid_id, x in scores.items()}
    links = _links(xs, neighbours)
    star = _z_scores(xs, links, include_self=True)
    plain = _z_scores(xs, links, include_self=False)
    lifts: dict[str, Lift] = {}
    for grid_id, own in xs.items():
        hot = sum(1 for j in links[grid_id] if xs[j] >= config.hot_score)
        gi_z = plain[grid_id]
        lift = 0.0
        if (
            config.enabled
            and gi_z > config.z_threshold
            and own >= config.min_own_score
            and hot >= config.min_hot_neighbours
        ):
            lift = round(min(config.max_lift, config.points_per_z * (gi_z - config.z_threshold)), 1)
        score = round(own + lift, 1) if lift else own
        lifts[grid_id] = Lift(star[grid_id], gi_z, hot, lift, score, level_for(score, levels))
    return lifts


def shown_level(own_level: str, lift: Lift) -> str:
    """The colour on the map: the grid's own level, raised to the lifted score's level, never lowered.

    The own level already carries the worker's hysteresis (a colour held up while the score has fallen),
    so it is a floor. A grid that is not lifted keeps its own level exactly as stored.
    """
    if lift.lift <= 0:
        return own_level
    try:
        own_rank = Level(own_level).rank
    except ValueError:  # not a level this version knows: the lifted score's level is the best answer
        return lift.level.value
    return lift.level.value if lift.level.rank > own_rank else own_level
