"""``pingan baselines learn`` and ``pingan baselines list``: what each grid normally sees, from ClickHouse.

``learn`` is a batch job (weekly from a scheduler is plenty): it stores a new snapshot; workers score
against the newest snapshot from their next start (``PINGAN_BASELINE_VERSION`` pins one).
"""

from __future__ import annotations

import argparse
from typing import Any

from pingan.baselines import learn_snapshot
from pingan.clock import Clock, SystemClock
from pingan.feeds import load_feeds
from pingan.grids import GridRegistry
from pingan.index.loading import load_index
from pingan.settings import Settings
from pingan.store import baselines
from pingan.store.client import connect
from pingan.store.migrate import prepare_database


def _learn(settings: Settings, args: argparse.Namespace, clock: Clock | None = None) -> int:
    index = load_index(settings, load_feeds(settings)).config  # the weights the worker uses
    registry = GridRegistry.load(settings.grid_registry_path)
    weeks = args.weeks or settings.baseline_history_weeks
    prepare_database(settings)
    executor = connect(settings)
    try:
        now = (clock or SystemClock()).now()
        grid_ids = [grid.grid_id for grid in registry.grids]
        report = learn_snapshot(executor, index, now=now, weeks=weeks, grid_ids=grid_ids)
    finally:
        executor.close()
    learned = report.learned
    print(
        f"baseline {learned.version}: {report.history_from:%Y-%m-%d %H:%M}..{report.history_to:%Y-%m-%d %H:%M} UTC, "
        f"{len(learned.cells)} grid-source cells, index config {index.version}"
    )
    for source in sorted(report.events_by_source):
        unit = learned.unit_weights.get(source)
        print(f"  {source:<12} {report.events_by_source[source]:>10} events  unit weight {unit or 0:.2f}")
    if not report.events_by_source:
        print("  no events in that history: workers keep scoring against the priors")
    print("workers use it from their next start")
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    prepare_database(settings)
    executor = connect(settings)
    try:
        rows = baselines.snapshots(executor, limit=20)
    finally:
        executor.close()
    if not rows:
        print("no learned baselines: workers score against the priors (run `pingan baselines learn`)")
    for row in rows:
        print(f"{row.version:<24} learned {row.learned_at:%Y-%m-%d %H:%M}  "
              f"history {row.history_from:%Y-%m-%d}..{row.history_to:%Y-%m-%d}  {row.events} events  "
              f"config {row.config_version}")  # fmt: skip
    return 0


def _weeks(text: str) -> int:
    try:
        weeks = int(text)
    except ValueError:
        weeks = 0
    if not 1 <= weeks <= 104:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of weeks from 1 to 104")
    return weeks


def add_baselines_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("baselines", help="learn and list per-grid baselines (what is normal)")
    commands = parser.add_subparsers(dest="baselines_command", required=True)
    learn = commands.add_parser("learn", help="learn a new baseline snapshot from the events in ClickHouse")
    learn.add_argument("--weeks", type=_weeks, default=None, help="weeks of history, 1-104 (default: settings)")
    learn.set_defaults(handler=_learn)
    listing = commands.add_parser("list", help="the stored baseline snapshots, newest first")
    listing.set_defaults(handler=_list)
    return parser
