"""One day of real Toronto MCI data through the real worker (Kafka -> `pingan worker` -> ClickHouse), on a
registry from `pingan grids generate`'s code and the feeds config deploy/config/real/feeds.toml: the windows
the worker stores score the same as the evaluation's replay through the pure pipeline, and the injected
incidents turn their grids orange or red.

This is what makes the offline evaluation (bench/evaluate_real.py) an evaluation of the worker: the same
records, the same config, the same baseline give the same window scores in both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from bench import evaluate_real
from bench.real_sources import load_toronto
from pingan.errors import StorageError
from pingan.settings import REPO_ROOT, Settings
from pingan.store import baselines, events, windows
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from tests.support.kafka import produce
from tests.support.processes import ChildProcess, wait_for

pytestmark = pytest.mark.integration


async def test_one_real_day_through_the_worker_scores_as_the_replay(settings: Settings, tmp_path) -> None:
    dataset = load_toronto()
    day = dataset.evaluate[0] + timedelta(days=1)
    prep = evaluate_real.prepare(dataset, 500, train=(day - timedelta(weeks=8), day))
    period = (day.timestamp(), day.timestamp() + 86400)
    incidents = evaluate_real.choose_incidents(prep, period, 1, seed=5)[:5]
    replayed = evaluate_real.replay(prep, incidents, period)

    registry_path = tmp_path / "toronto-grids.json"
    registry_path.write_bytes(orjson.dumps(prep.registry_document))
    settings = settings.model_copy(update={
        "grid_registry_path": registry_path, "feeds_config_path": evaluate_real.REAL_FEEDS,
        "batch_within_seconds": 0.2, "worker_id": f"w-{settings.topic_prefix}",
    })  # fmt: skip
    # The learned baseline, stored as `pingan baselines learn` stores it: the worker loads the newest.
    prepare_database(settings)
    executor = connect(settings)
    learned = prep.baseline.learned
    assert learned is not None
    baselines.insert(executor, learned, learned_at=datetime.now(UTC), history_from=prep.train[0],
                     history_to=prep.train[1], config_version=prep.index.version,
                     events_by_source={dataset.feed: len(dataset.between(*prep.train))})  # fmt: skip

    worker = ChildProcess("worker", settings, tmp_path / "worker.log", env={"PYTHONPATH": str(REPO_ROOT)}).start()
    try:
        await ensure_topics(settings)
        messages = []
        for _, raw in evaluate_real.documents(prep, incidents, period):
            document = orjson.loads(raw)
            grid = prep.registry.locate(document["location"]["lon"], document["location"]["lat"])
            messages.append((grid.grid_id.encode() if grid else None, raw))
        await produce(settings, settings.topic_events, messages)
        located = sum(1 for key, _ in messages if key is not None)

        def stored() -> bool:
            assert worker.alive, worker.log_tail()
            try:
                return events.count_distinct(executor, source=dataset.feed) == located
            except StorageError:
                return False

        wait_for(stored, timeout=90, what=f"{located} events in ClickHouse", interval=0.5)
        start, end = datetime.fromtimestamp(period[0] - 3600, UTC), datetime.fromtimestamp(period[1] + 3600, UTC)

        def windows_of(grid_id: str) -> dict[int, tuple[float, str]]:
            rows = windows.history(executor, grid_id, start, end, 300)
            return {int(r["start"].timestamp()): (r["max_score"], r["level"]) for r in rows}

        for incident in incidents:
            grid_id = prep.grid_ids[incident.grid]
            expected = {s: v for (g, s), v in replayed.windows.items() if g == grid_id}
            assert expected, grid_id
            # The worker writes a window's row again whenever a later event changes it; wait for the last.
            got = wait_for(lambda g=grid_id, e=expected: windows_of(g) == e and windows_of(g), timeout=30,
                           what=f"{grid_id}'s windows as replayed", interval=0.5)  # fmt: skip
            assert any(level in {"orange", "red"} for _, level in got.values()), (grid_id, got)
        assert worker.alive, worker.log_tail()
    finally:
        worker.stop()
        executor.close()
