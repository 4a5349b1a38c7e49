"""`pingan worker`: prepare storage and topics, then run the Faust worker until stopped."""

from __future__ import annotations

import asyncio
import logging
import time

from pingan.baselines import baseline_model
from pingan.errors import StorageError
from pingan.feeds import FeedRules, load_feeds
from pingan.grids import GridRegistry
from pingan.index.loading import load_index
from pingan.settings import Settings
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.streams.app import create_app
from pingan.streams.stopping import PromptWorker
from pingan.topics import ensure_topics

log = logging.getLogger(__name__)


def _wait_for_storage(settings: Settings) -> None:
    """Migrate, waiting for ClickHouse if it is still starting (services often come up together)."""
    deadline = time.monotonic() + settings.startup_wait_seconds
    while True:
        try:
            prepare_database(settings)
            return
        except StorageError as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("ClickHouse not ready (%s); retrying for up to %.0fs", exc, deadline - time.monotonic())
            time.sleep(1.0)


def run_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    # Config errors surface here, before anything connects.
    registry = GridRegistry.load(settings.grid_registry_path)
    # Feeds (built-in, plugins, feeds.toml) decide which sources are accepted and add index sections.
    feeds = load_feeds(settings)
    loaded = load_index(settings, feeds)
    index = loaded.config
    for name in loaded.unweighted_feeds:
        log.warning("feed %s has no risk-index section: its events are stored but weigh nothing", name)
    _wait_for_storage(settings)
    executor = connect(settings)
    try:
        baseline = baseline_model(executor, index, registry, settings.baseline_version)
    finally:
        executor.close()
    asyncio.run(ensure_topics(settings))
    (settings.data_dir / "faust" / settings.worker_id).mkdir(parents=True, exist_ok=True)
    app, worker = create_app(
        settings, registry, index, baseline=baseline, rules=FeedRules.for_settings(settings, feeds),
    )  # fmt: skip
    log.info(
        "worker %s: %d grids, index config %s, baseline %s",
        settings.worker_id, len(registry.grids), index.version, baseline.version,
    )  # fmt: skip
    try:
        PromptWorker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
    finally:
        worker.storage.close()
