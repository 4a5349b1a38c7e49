"""Learn baselines from the events in ClickHouse, and load the one a worker scores against.

The maths is in pingan/index/baseline.py; the SQL in pingan/store/baselines.py. This module joins them:
``learn_snapshot`` (the ``pingan baselines learn`` job) and ``baseline_model`` (worker start-up).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from pingan.errors import ConfigError
from pingan.grids import Grid, GridRegistry
from pingan.index.baseline import PRIOR_VERSION, BaselineModel, GridProfile, LearnedBaseline, learn
from pingan.index.scoring import IndexConfig
from pingan.store import baselines
from pingan.store.client import Executor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnReport:
    learned: LearnedBaseline
    history_from: datetime
    history_to: datetime
    events_by_source: dict[str, int]


def learn_snapshot(
    executor: Executor, index: IndexConfig, *, now: datetime, weeks: int, grid_ids: Iterable[str] = ()
) -> LearnReport:
    """Learn from the ``weeks`` whole weeks of events before the current hour and store the snapshot.

    Whole weeks, so every hour of the week is seen equally often. The version is the end of the history
    (UTC, to the hour): learning again within the same hour rewrites the same snapshot. ``grid_ids``: the
    registry's grids, recorded as observed (a grid without events in the history saw nothing; a grid added
    later is new and gets its prior).
    """
    history_to = now.replace(minute=0, second=0, microsecond=0)
    history_from = history_to - timedelta(weeks=weeks)
    events_by_source: dict[str, int] = {}

    def counted() -> Iterator[tuple[str, str, str, int, int, int]]:
        for row in baselines.history(executor, history_from, history_to):
            events_by_source[row[1]] = events_by_source.get(row[1], 0) + row[5]
            yield row

    version = f"{history_to:%Y%m%dT%H}Z-{weeks}w"
    learned = learn(counted(), index.event_weight, weeks=weeks, version=version, grids=grid_ids)
    baselines.insert(
        executor, learned, learned_at=now, history_from=history_from, history_to=history_to,
        config_version=index.version, events_by_source=events_by_source,
    )  # fmt: skip
    return LearnReport(learned, history_from, history_to, events_by_source)


def grid_profiles(registry: GridRegistry) -> list[GridProfile]:
    return [GridProfile(grid.grid_id, grid.grid_type, grid.population) for grid in registry.grids]


def scoring_version(executor: Executor, index: IndexConfig, pinned: str = "") -> str:
    """The baseline version a worker scores with: ``pinned`` (``PINGAN_BASELINE_VERSION``), else the newest
    snapshot, else ``prior`` (no learned history)."""
    if pinned:
        return pinned
    newest = baselines.newest(executor)
    if newest is None:
        return PRIOR_VERSION
    if newest.config_version != index.version:
        log.warning(
            "baseline %s was learned with index config %s, the worker runs %s: weights may differ; "
            "run `pingan baselines learn` again", newest.version, newest.config_version, index.version,
        )  # fmt: skip
    return newest.version


def _missing(version: str) -> ConfigError:
    return ConfigError(f"baseline version {version!r} is not in ClickHouse (see `pingan baselines list`)")


def baseline_model(executor: Executor, index: IndexConfig, registry: GridRegistry, version: str = "") -> BaselineModel:
    """The model a worker scores with: the pinned or newest snapshot, or the priors alone if there is none."""
    profiles = grid_profiles(registry)
    version = scoring_version(executor, index, version)
    if version == PRIOR_VERSION:
        log.info("no learned baseline: scoring against type/population priors (pingan baselines learn)")
        return BaselineModel(index.baseline, profiles)
    learned = baselines.load(executor, version)
    if learned is None:
        raise _missing(version)
    log.info("scoring against baseline %s (%d grid-source cells)", version, len(learned.cells))
    return BaselineModel(index.baseline, profiles, learned)


def grid_baseline(executor: Executor, index: IndexConfig, grid: Grid, version: str = "") -> BaselineModel:
    """The same model as the worker's, for one grid only (reads that grid's cells, not the whole snapshot)."""
    profile = [GridProfile(grid.grid_id, grid.grid_type, grid.population)]
    version = scoring_version(executor, index, version)
    if version == PRIOR_VERSION:
        return BaselineModel(index.baseline, profile)
    learned = baselines.load_grid(executor, version, grid.grid_id)
    if learned is None:
        raise _missing(version)
    return BaselineModel(index.baseline, profile, learned)
