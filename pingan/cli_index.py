"""``pingan rollup`` and ``pingan publish``: store roll-up snapshots and publish the public-safety index.

Wired into the main parser by ``add_index_parser(subparsers)``; each handler takes the settings and the
parsed arguments and returns an exit code, like the other commands. Both are batch jobs for a scheduler
(cron, a Kubernetes CronJob): ``rollup`` every few minutes gives analysts a history of unit risk,
``publish --period day`` after midnight (local time) publishes yesterday.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pingan.clock import Clock, SystemClock
from pingan.grids import GridRegistry
from pingan.index.levels import Level
from pingan.index.published import (
    PERIOD_KINDS,
    Publication,
    last_complete_period,
    load_config,
)
from pingan.index.rollup import DEFAULT_TOP, ROLLUP_LEVELS, UnitRisk, roll_up, scores_from_rows
from pingan.publishing import publish
from pingan.settings import Settings
from pingan.store import risk, units
from pingan.store.client import DriverExecutor, Executor, connect
from pingan.store.migrate import prepare_database


@dataclass(frozen=True)
class RollupSnapshot:
    as_of: datetime
    units: dict[str, list[UnitRisk]]  # unit level -> units

    @property
    def rows(self) -> int:
        return sum(len(found) for found in self.units.values())


_NOT_GREEN_WORST_FIRST = tuple(level.value for level in reversed(Level) if level is not Level.GREEN)


def rollup_snapshot(
    executor: Executor, registry: GridRegistry, *, now: datetime, top: int = DEFAULT_TOP
) -> RollupSnapshot:
    """Roll ``risk_latest`` up to every unit level and store the snapshot in ``unit_risk``.

    The snapshot is dated by the newest grid assessment it saw (``now`` when there is none), so running
    again without new risk rewrites the same keys instead of adding a copy.
    """
    rows = risk.latest(executor)
    scores = scores_from_rows(rows)
    as_of = max((row["as_of"] for row in rows), default=now)
    by_level = {level: roll_up(registry, scores, level, top=top) for level in ROLLUP_LEVELS}
    for found in by_level.values():
        units.insert(executor, found, as_of=as_of, computed_at=now)
    return RollupSnapshot(as_of, by_level)


def _storage(settings: Settings) -> DriverExecutor:
    """A client to the database, created and migrated first (both idempotent), as the worker does."""
    prepare_database(settings)
    return connect(settings)


def _rollup(settings: Settings, args: argparse.Namespace, clock: Clock | None = None) -> int:
    registry = GridRegistry.load(settings.grid_registry_path)
    executor = _storage(settings)
    try:
        snapshot = rollup_snapshot(executor, registry, now=(clock or SystemClock()).now(), top=args.top)
    finally:
        executor.close()
    print(f"unit_risk: {snapshot.rows} rows as of {snapshot.as_of.isoformat()}")
    for level, found in snapshot.units.items():
        counts = {colour: sum(1 for u in found if u.level == colour) for colour in _NOT_GREEN_WORST_FIRST}
        print(f"  {level:<15} {len(found):>4} units  " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def describe(publication: Publication, worst: int = 3) -> list[str]:
    """A few lines for the operator: per level, the worst units and who put on or took off the hat."""
    period = publication.period
    lines = [f"published {period.kind} {period.start.isoformat()}..{period.end.isoformat()} (end exclusive)"]
    for level, rows in publication.units.items():
        diff = publication.diff(level)
        tail = ", ".join(f"{u.current.unit.unit_id} {u.current.score:g}" for u in rows[-worst:][::-1])
        lines.append(f"  {level:<15} {len(rows):>4} units; lowest: {tail or '-'}")
        lines.append(
            f"  {'':<15} hat on: {', '.join(diff.entered) or '-'}; off: {', '.join(diff.left) or '-'}; "
            f"still: {', '.join(diff.still) or '-'}"
        )
    return lines


def _publish(settings: Settings, args: argparse.Namespace, clock: Clock | None = None) -> int:
    registry = GridRegistry.load(settings.grid_registry_path)
    config = load_config(settings.published_index_config_path)
    now = (clock or SystemClock()).now()
    day = args.date or last_complete_period(args.period, now, config.zone).start
    executor = _storage(settings)
    try:
        publication = publish(executor, registry, config, args.period, day, now=now)
    finally:
        executor.close()
    for line in describe(publication):
        print(line)
    return 0


def add_index_parser(subparsers: Any) -> Sequence[argparse.ArgumentParser]:
    """Add ``rollup`` and ``publish`` to the main parser's subparsers."""
    rollup = subparsers.add_parser(
        "rollup", help="roll the current grid risk up to communities, subdistricts, districts and police stations "
        "and store the snapshot in ClickHouse (unit_risk)",
    )  # fmt: skip
    rollup.add_argument("--top", type=int, default=DEFAULT_TOP, help="worst grids kept per unit")
    rollup.set_defaults(handler=_rollup)
    published = subparsers.add_parser(
        "publish", help="compute and store the published public-safety index of one period (published_index)"
    )
    published.add_argument("--period", choices=PERIOD_KINDS, required=True, help="day, ISO week or month")
    published.add_argument(
        "--date", type=_parse_date, default=None,
        help="any day in the period (YYYY-MM-DD, local); default: the last complete period",
    )  # fmt: skip
    published.set_defaults(handler=_publish)
    return (rollup, published)
