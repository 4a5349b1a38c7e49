"""Simple baselines the risk index is compared with, and the calibration check: numpy over sparse windows.

Two years of a city's grid-hours are tens of millions of cells, nearly all empty: a window with no event
never flags under any of these rules, so only the windows that hold an event are scored. Windows are the
index's own (one hour, ending at each five-minute bucket); a window's score counts in the grid-hour its last
bucket lies in.

Baselines (each thresholded to the index's flag rate, see :func:`threshold_for_rate`):

- raw count: events in the window;
- weighted count: the index's own weighted count in the window (type weight x severity multiplier), alone:
  what the baseline, the surprise cap and corroboration add is the difference to the index;
- mean + k sigma: (count - mean) / sd of the grid's own hourly counts over the training period (k tuned;
  3 is the textbook value);
- Poisson tail without shrinkage: -log10 P(X >= count) under the grid's own hour-of-week mean from
  training (no prior, no pooling; a cell never seen gets half an event over the history, or any event there
  would be infinitely surprising);
- kernel-density hot spots: grids ranked by a Gaussian kernel density of training events (500 m bandwidth)
  at their centres; the top N are flagged all the time (a static hot-spot map, as patrol planning uses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BUCKET_S = 300
HOP_BUCKETS = 12
HOURS_PER_WEEK = 168
_MONDAY_OFFSET_HOURS = 72


def hour_of_week(epoch_s: np.ndarray) -> np.ndarray:
    """The same convention as pingan.index.baseline.hour_of_week (UTC, Monday 00:00 = 0), vectorised."""
    return ((np.floor(epoch_s / 3600).astype(np.int64) + _MONDAY_OFFSET_HOURS) % HOURS_PER_WEEK).astype(np.int64)


@dataclass(frozen=True)
class Windows:
    """Every (grid, window end bucket) holding at least one event, with its event count."""

    grid: np.ndarray
    end_bucket: np.ndarray  # bucket index (epoch seconds // 300) of the window's last bucket
    count: np.ndarray
    weighted: np.ndarray  # the index's weighted count (sum of event weights)

    @classmethod
    def of(cls, grid: np.ndarray, time_s: np.ndarray, weight: np.ndarray) -> Windows:
        bucket = np.floor(time_s / BUCKET_S).astype(np.int64)
        ends = (bucket[:, None] + np.arange(HOP_BUCKETS)[None, :]).ravel()
        grids = np.repeat(grid.astype(np.int64), HOP_BUCKETS)
        key = grids * (1 << 34) + ends  # bucket indices stay below 2^34 (year 2133)
        unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        weighted = np.bincount(inverse, weights=np.repeat(weight, HOP_BUCKETS), minlength=len(unique))
        return cls(unique >> 34, unique & ((1 << 34) - 1), counts, weighted)

    @property
    def hour(self) -> np.ndarray:
        return self.end_bucket * BUCKET_S // 3600


# score(grid, end bucket, count, weighted count) -> score, vectorised over arrays of equal length
Score = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def poisson_log10_tail(count: np.ndarray, mean: np.ndarray, terms: int = 60) -> np.ndarray:
    """-log10 P(X >= count) for X ~ Poisson(mean), integer counts >= 1, means well below ``terms``."""
    count = count.astype(float)[:, None]
    k = count + np.arange(terms)[None, :]
    log_terms = k * np.log(mean)[:, None] - mean[:, None] - np.vectorize(math.lgamma)(k + 1)
    peak = log_terms.max(axis=1, keepdims=True)
    log_tail = (peak + np.log(np.exp(log_terms - peak).sum(axis=1, keepdims=True))).ravel()
    return np.maximum(-log_tail / math.log(10), 0.0)


@dataclass(frozen=True)
class History:
    """What the baselines learn from the training period: per-grid counts by hour."""

    grids: int
    hours: float
    grid: np.ndarray  # training events' grid
    time_s: np.ndarray

    def hourly_mean_sd(self) -> tuple[np.ndarray, np.ndarray]:
        hours = np.floor(self.time_s / 3600).astype(np.int64)
        key, per_hour = np.unique(self.grid.astype(np.int64) * (1 << 30) + (hours - hours.min()), return_counts=True)
        total = np.bincount(self.grid, minlength=self.grids).astype(float)
        squares = np.bincount(key >> 30, weights=per_hour.astype(float) ** 2, minlength=self.grids)
        mean = total / self.hours
        sd = np.sqrt(np.maximum(squares / self.hours - mean**2, 0.0))
        return mean, np.maximum(sd, 1.0 / self.hours)

    def hour_of_week_means(self) -> np.ndarray:
        """Events per hour, per grid and hour of the week, unshrunk (grids x 168)."""
        table = np.zeros((self.grids, HOURS_PER_WEEK))
        np.add.at(table, (self.grid, hour_of_week(self.time_s)), 1.0)
        weeks = self.hours / HOURS_PER_WEEK
        return np.maximum(table, 0.5) / weeks


def raw_count() -> Score:
    return lambda grid, end, count, weighted: count.astype(float)


def weighted_count() -> Score:
    """The index's own weighted count with nothing else: no baseline, no corroboration, no hysteresis."""
    return lambda grid, end, count, weighted: np.round(weighted, 6)


def mean_sigma(history: History) -> Score:
    mean, sd = history.hourly_mean_sd()
    return lambda grid, end, count, weighted: (count - mean[grid]) / sd[grid]


def poisson_unshrunk(history: History) -> Score:
    means = history.hour_of_week_means()

    def score(grid: np.ndarray, end: np.ndarray, count: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        mean = means[grid, hour_of_week(end.astype(float) * BUCKET_S)]
        return poisson_log10_tail(count, mean)

    return score


def kde_density(centroids_m: np.ndarray, train_m: np.ndarray, bandwidth_m: float = 500.0) -> np.ndarray:
    """Gaussian kernel density of training events at each grid centre (projected metres), up to a constant."""
    density = np.zeros(len(centroids_m))
    # 32 centres at a time: with 180,000 training events that is under 100 MB of differences, not gigabytes.
    for chunk in np.array_split(np.arange(len(centroids_m)), max(1, len(centroids_m) // 32)):
        d2 = ((centroids_m[chunk, None, :] - train_m[None, :, :]) ** 2).sum(axis=2)
        density[chunk] = np.exp(-d2 / (2 * bandwidth_m**2)).sum(axis=1)
    return density


def grid_hour_max(windows: Windows, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grid-hour key, highest window score in it), key = grid * 2^32 + hour."""
    key = windows.grid * (1 << 32) + windows.hour
    order = np.lexsort((-scores, key))
    key, scores = key[order], scores[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    return key[first], scores[first]


def threshold_for_rate(scores: np.ndarray, total_grid_hours: int, rate: float) -> tuple[float, int]:
    """The lowest threshold whose flagged grid-hours (score >= threshold) stay within ``rate``: (threshold,
    flagged). Ties are never split, so the achieved rate may sit below the target."""
    allowed = math.floor(rate * total_grid_hours)
    values = np.sort(scores)[::-1]
    if allowed <= 0 or len(values) == 0:
        return math.inf, 0
    if allowed >= len(values):
        return float(values[-1]), len(values)
    candidate = values[allowed]  # the (allowed + 1)-th highest: flagging it would exceed the budget
    threshold = float(np.min(values[values > candidate])) if np.any(values > candidate) else math.inf
    return threshold, int(np.sum(values >= threshold))
