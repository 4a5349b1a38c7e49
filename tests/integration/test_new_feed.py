"""Acceptance: a brand-new source, defined in the test package and registered the documented way (an entry
point in an installed distribution + a feeds config section), reaches ClickHouse and the risk index through
a real `pingan worker` process, with nothing in streams/ or schemas/ knowing about it."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan.errors import StorageError
from pingan.feeds import load_feeds
from pingan.grids import GridRegistry
from pingan.index.loading import load_index
from pingan.index.scoring import assess
from pingan.producers.adapters import adapter_for, publisher_for
from pingan.producers.adapters.tailer import FileTailer
from pingan.settings import REPO_ROOT, Settings
from pingan.store import events, risk
from pingan.store.client import connect
from pingan.topics import ensure_topics
from tests.plugins.alarm_column import FEEDS_TOML, AlarmColumnPayload
from tests.support.kafka import read_topic
from tests.support.plugins import write_dist_info
from tests.support.processes import ChildProcess, wait_for

pytestmark = pytest.mark.integration


def _local(moment: datetime) -> str:
    return (moment + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")


async def test_a_plugin_feed_colours_the_map_without_touching_streams(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1. "pip install pingan-feed-alarm-column": a distribution whose entry point names the plugin's feed().
    site = tmp_path / "site"
    write_dist_info(site, {"alarm_column": "tests.plugins.alarm_column:feed"}, name="pingan-feed-alarm-column")
    # 2. Its section in the feeds config: category table and index weights.
    feeds_config = tmp_path / "feeds.toml"
    shipped = (REPO_ROOT / "deploy" / "config" / "feeds.toml").read_text(encoding="utf-8")
    feeds_config.write_text(shipped + FEEDS_TOML, encoding="utf-8")
    settings = settings.model_copy(
        update={
            "feeds_config_path": feeds_config,
            "batch_within_seconds": 0.2,
            "worker_id": f"w-{settings.topic_prefix}",
        }
    )
    # 3. Restart the worker: it sees the distribution on its path, like any installed package.
    child_path = os.pathsep.join([str(site), str(REPO_ROOT)])
    worker = ChildProcess("worker", settings, tmp_path / "worker.log", env={"PYTHONPATH": child_path}).start()
    try:
        monkeypatch.syspath_prepend(str(site))  # the producer side sees it too
        feeds = load_feeds(settings)
        spec = feeds["alarm_column"]
        assert (spec.origin, spec.payload_model) == ("plugin", AlarmColumnPayload)

        # 4. Alarm-column controllers log JSON lines; the generic tailer sends them through the plugin's mapper.
        registry = GridRegistry.load(settings.grid_registry_path)
        hot, quiet = registry.grids[200], registry.grids[400]
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
        lon, lat = hot.centroid
        records = [
            {"column_id": "BJZ-0012", "seq": n, "event": "一键报警", "time": _local(at + timedelta(seconds=n)),
             "lon": lon, "lat": lat, "answered": True, "call_seconds": 30 + n}
            for n in range(3)
        ] + [
            {"column_id": "BJZ-0040", "seq": 1, "event": "防拆报警", "time": _local(at), "grid_id": quiet.grid_id},
            {"column_id": "BJZ-0040", "seq": 2, "event": "picnic", "time": _local(at), "grid_id": quiet.grid_id},
        ]  # fmt: skip
        path = tmp_path / "columns.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        await ensure_topics(settings)
        async with publisher_for(settings, spec, registry) as publisher:
            tail = FileTailer(path, adapter_for(settings, spec), publisher, state_path=tmp_path / "columns.state")
            report = await tail.run(stop_at_eof=True)
        assert (report.events, report.dead_letters) == (4, 1)

        # What the index should say, from the same configuration the worker merged.
        index = load_index(settings, feeds).config
        expected = assess(Counter({("alarm_column", "alarm", 4): 3}), index)
        assert expected.level.value == "red" and expected.dominant_source == "alarm_column"

        executor = connect(settings)  # lazy: the database appears when the worker has migrated

        def stored() -> int | None:
            assert worker.alive, worker.log_tail()
            try:
                return events.count_distinct(executor, source="alarm_column") == 4 or None
            except StorageError:
                return None  # the worker has not created the database yet

        def hot_grid() -> dict | None:
            rows = {row["grid_id"]: row for row in risk.latest(executor)}
            row = rows.get(hot.grid_id)
            return row if row is not None and row["level"] == expected.level.value else None

        try:
            wait_for(stored, timeout=60, what="the plugin's events in ClickHouse", interval=0.3)
            row = wait_for(hot_grid, timeout=30, what=f"{hot.grid_id} {expected.level.value}", interval=0.3)
        finally:
            executor.close()
        assert row["dominant_source"] == "alarm_column"
        assert row["score"] == expected.score
        assert row["config_version"] == index.version and "+alarm_column." in index.version

        # The bad record went to the dead-letter topic with its reason, from the producer.
        [letter] = await read_topic(settings, settings.topic_dead_letters, 1, timeout=10)
        assert dict(letter.headers)["pingan-error-kind"] == b"unknown_category"
        assert worker.alive
    finally:
        worker.stop()
