"""One publication of the published index (平安指数): the period's counts read from ClickHouse, scored by the
pure :mod:`pingan.index.published`, written back to ``published_index`` (``pingan publish``)."""

from __future__ import annotations

from datetime import date, datetime

from pingan.grids import GridRegistry
from pingan.index.published import (
    Period,
    Publication,
    PublishedConfig,
    PublishedUnit,
    UnitInfo,
    baseline_rate,
    build_units,
    period_containing,
    score_units,
)
from pingan.store import grid_units
from pingan.store import published as store
from pingan.store.client import Executor


def publish(
    executor: Executor,
    registry: GridRegistry,
    config: PublishedConfig,
    kind: str,
    day: date,
    *,
    now: datetime,
) -> Publication:
    """Compute and store the index of the ``kind`` period containing ``day``, for every published level.

    Idempotent: the same events, registry and config give the same rows under the same keys. The previous
    period is recomputed from the events with the same config rather than read back, so the change never
    compares two configurations.
    """
    synced = grid_units.sync(executor, registry, now=now)
    period = period_containing(kind, day)
    previous = period.previous()
    history = config.baseline_periods[kind]
    zone = config.zone
    sources = config.counted_sources

    populations = store.district_populations(executor)
    earliest, _ = previous.back(history).utc_bounds(zone)
    _, latest = period.utc_bounds(zone)
    weighted_by_day: dict[str, dict[date, float]] = {}
    for district_id, local_day, source, event_type, severity, incidents in store.district_daily_counts(
        executor, sources, earliest, latest, config.timezone
    ):
        by_day = weighted_by_day.setdefault(district_id, {})
        by_day[local_day] = by_day.get(local_day, 0.0) + incidents * config.event_weight(source, event_type, severity)

    def baselines(p: Period) -> dict[str, float]:
        return {d: baseline_rate(weighted_by_day.get(d, {}), pop, p, history) for d, pop in populations.items()}

    baseline_now, baseline_before = baselines(period), baselines(previous)
    results: dict[str, list[PublishedUnit]] = {}
    for unit_level in config.unit_levels:
        units = [
            UnitInfo(unit_id, _unit_name(registry, unit_id), district_id, population)
            for unit_id, district_id, population in store.units(executor, unit_level)
        ]
        current = score_units(units, store.unit_counts(executor, unit_level, sources, *period.utc_bounds(zone)),
                              baseline_now, config)  # fmt: skip
        earlier = score_units(units, store.unit_counts(executor, unit_level, sources, *previous.utc_bounds(zone)),
                              baseline_before, config)  # fmt: skip
        rows = build_units(period, unit_level, current, earlier, config)
        store.insert(executor, rows, computed_at=now)
        results[unit_level] = rows
    return Publication(period, results, synced)


def _unit_name(registry: GridRegistry, unit_id: str) -> str:
    unit = registry.unit(unit_id)
    return unit.name if unit is not None else unit_id
