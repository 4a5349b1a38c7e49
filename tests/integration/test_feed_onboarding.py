"""Acceptance (issue 12): a feed defined only in feeds.toml plus a place table (the electrical-fire example of
docs/adding-a-producer.md) is connected without code: checked dry, sent by webhook and by file through a real
worker and dead-letter sink, its valid records stored and counted in the index, its invalid ones in the
dead-letter table with reason and origin, the same outcome on both paths; after a config fix a replay stores
the fixed records once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pingan.api.app import create_app
from pingan.api.ingest_auth import hash_key
from pingan.api.ingest_models import IngestResponse
from pingan.errors import StorageError
from pingan.feeds import load_feeds
from pingan.grids import GridRegistry
from pingan.index.loading import load_index
from pingan.index.scoring import assess
from pingan.settings import REPO_ROOT, Settings
from pingan.store import dead_letters, events, risk
from pingan.store.client import connect
from pingan.topics import ensure_topics
from tests.support.kafka import read_topic
from tests.support.processes import ChildProcess, run_cli, wait_for

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "docs" / "examples" / "electrical-fire"
FIRE_KEY = "test-fire-key-0123456789"
HOT_GRID = "PA01-C06-G08"  # where the place table puts EF-0001..3
FEED = "electrical_fire"


def _records(at: datetime) -> list[dict[str, Any]]:
    """The example's alarms (docs/examples/electrical-fire/alarms.jsonl) at local times around ``at``."""
    records = [orjson.loads(line) for line in (EXAMPLE / "alarms.jsonl").read_bytes().splitlines() if line.strip()]
    local = at + timedelta(hours=8)  # the monitors write Beijing time without an offset
    for number, record in enumerate(records):
        record["alarm_time"] = (local + timedelta(seconds=number)).strftime("%Y-%m-%d %H:%M:%S")
    return records


def _check(settings: Settings, path: Path) -> subprocess.CompletedProcess[str]:
    env = {**settings.as_env(), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "pingan.cli", "producers", "check", FEED, str(path)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_a_config_only_feed_by_webhook_and_by_file_is_stored_dead_lettered_and_replayed(
    settings: Settings, tmp_path: Path
) -> None:
    # 1. The feed: the shipped feeds.toml plus the example section, the place table next to it.
    config = tmp_path / "config"
    config.mkdir()
    shipped = (REPO_ROOT / "deploy" / "config" / "feeds.toml").read_text(encoding="utf-8")
    section = (EXAMPLE / "feeds.toml").read_text(encoding="utf-8")
    (config / "feeds.toml").write_text(shipped + section, encoding="utf-8")
    shutil.copy(EXAMPLE / "electrical-fire-places.csv", config)
    keys = config / "ingest-keys.toml"
    keys.write_text(f'[[producer]]\nname = "fire"\nsources = ["{FEED}"]\nkey_sha256 = ["{hash_key(FIRE_KEY)}"]\n')
    settings = settings.model_copy(
        update={
            "feeds_config_path": config / "feeds.toml",
            "ingest_keys_path": keys,
            "batch_within_seconds": 0.2,
            "worker_id": f"w-{settings.topic_prefix}",
        }
    )
    registry = GridRegistry.load(settings.grid_registry_path)
    records = _records(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2))
    path = tmp_path / "alarms.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    await ensure_topics(settings)

    # 2. Dry run: what each record becomes, nothing sent.
    checked = _check(settings, path)
    assert checked.returncode == 1, checked.stderr  # some records would be refused
    lines = checked.stdout.splitlines()
    assert lines[0].startswith("line 1: accepted electrical-fire-EF-0001-A1 type smoke severity 4 at PA01-C06-G08")
    assert lines[5].startswith("line 6: refused unknown_category at alarm_type")
    assert lines[6].startswith("line 7: refused unknown_place at device_id")
    assert lines[7].startswith("line 8: refused unknown_severity at level")
    assert "5 would be accepted, 3 refused" in lines[-1]
    assert await read_topic(settings, settings.topic_events, 1, timeout=2) == []

    worker = ChildProcess("worker", settings, tmp_path / "worker.log").start()
    sink = ChildProcess("dead-letters", settings, tmp_path / "sink.log", args=["sink"]).start()
    executor = connect(settings)
    try:
        # 3. By webhook: the raw records as a JSON array, in the feed's own shape.
        app = create_app(settings, registry=registry)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client:
                response = await client.post(
                    f"/v1/webhooks/{FEED}",
                    content=orjson.dumps(records),
                    headers={"Authorization": f"Bearer {FIRE_KEY}", "Content-Type": "application/json"},
                )
                assert response.status_code == 207, response.text
                answer = IngestResponse.model_validate(response.json())

                # 4. By file: the same records through `pingan producers tail --once`.
                tailed = run_cli(settings, "producers", "tail", FEED, str(path), "--once")
                assert "8 lines: 5 accepted, 3 dead-lettered" in tailed.stdout

                accepted = {r.index: r.event_id for r in answer.results if r.status == "accepted"}
                assert sorted(accepted) == [0, 1, 2, 3, 4]
                refused = {r.index: r.error for r in answer.results if r.error is not None}
                assert {i: e.kind for i, e in refused.items()} == {
                    5: "unknown_category", 6: "unknown_place", 7: "unknown_severity"
                }  # fmt: skip

                def stored() -> set[str] | None:
                    assert worker.alive, worker.log_tail()
                    try:
                        ids = {r[0] for r in executor.query("SELECT DISTINCT event_id FROM events")}
                    except StorageError:
                        return None  # the worker has not migrated yet
                    return ids if len(ids) >= 5 else None

                # 5. Valid ones stored (each once: both paths sent the same event ids).
                assert wait_for(stored, timeout=60, what="the feed's events", interval=0.3) == set(accepted.values())
                assert events.count_distinct(executor, source=FEED) == 5

                # ... and counted in the index: three smoke alarms in one building turn its grid red, as the
                # tutorial computes (12.0 weighted, sub-index 160); the test alarm weighs nothing.
                feeds = load_feeds(settings)
                index = load_index(settings, feeds).config
                expected = assess(Counter({(FEED, "smoke", 4): 2, (FEED, "smoke", 3): 1}), index)
                assert (expected.level.value, expected.score, expected.dominant_source) == ("red", 160.0, FEED)

                def hot() -> dict[str, Any] | None:
                    row = {r["grid_id"]: r for r in risk.latest(executor)}.get(HOT_GRID)
                    return row if row is not None and row["level"] == expected.level.value else None

                row = wait_for(hot, timeout=30, what=f"{HOT_GRID} {expected.level.value}", interval=0.3)
                assert (row["dominant_source"], row["score"]) == (FEED, expected.score)
                assert "PA02-C02-G40" not in {r["grid_id"] for r in risk.latest(executor) if r["score"] > 0}

                # 6. Invalid ones in the dead-letter table, from both paths, with reason and origin.
                def letters() -> list[dict[str, Any]] | None:
                    assert sink.alive, sink.log_tail()
                    rows = dead_letters.recent(executor, feed=FEED)
                    return rows if len(rows) >= 6 else None

                try:
                    rows = wait_for(letters, timeout=30, what="six dead letters in the table", interval=0.3)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{sink.log_tail()}") from None
                assert len(rows) == 6
                by_path: dict[str, dict[str, dict[str, Any]]] = {"webhook": {}, "tailer": {}}
                offsets = [0]
                for record in records:
                    offsets.append(offsets[-1] + len(orjson.dumps(record)) + 1)
                for stored_row in rows:
                    by_path[stored_row["source"]][stored_row["origin"]] = stored_row
                for index_in_body, error in refused.items():
                    by_webhook = by_path["webhook"][f"http:fire/{answer.request_id}#{index_in_body}"]
                    by_file = by_path["tailer"][f"file:{path.resolve()}@{offsets[index_in_body]}"]
                    for stored_row in (by_webhook, by_file):  # the same outcome on both paths
                        assert (stored_row["kind"], stored_row["field"] or None, stored_row["reason"]) == (
                            error.kind, error.field, error.reason
                        )  # fmt: skip
                        assert stored_row["adapter"] == "pingan.producers.adapters.device:map_record"
                    assert orjson.loads(by_webhook["raw"]) == orjson.loads(by_file["raw"]) == records[index_in_body]

                # Per-feed counts for ops.
                feed_counts = {c["feed"]: c for c in (await client.get("/v1/feeds")).json()["feeds"]}
                fire = feed_counts[FEED]
                assert (fire["accepted"], fire["dead_lettered"]) == (5, 6)
                assert fire["dead_lettered_by_kind"] == {
                    "unknown_category": 2,
                    "unknown_place": 2,
                    "unknown_severity": 2,
                }
                assert fire["last_seen"] is not None
                assert feed_counts["call110"]["accepted"] == 0

        # 7. The CLI shows them.
        listed = run_cli(settings, "dead-letters", "list", "--source", "tailer", "--json")
        listed_rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert sorted(r["kind"] for r in listed_rows) == ["unknown_category", "unknown_place", "unknown_severity"]
        place_origin = next(r["origin"] for r in listed_rows if r["kind"] == "unknown_place")
        table = run_cli(settings, "dead-letters", "list", "--feed", FEED, "--kind", "unknown_place").stdout.splitlines()
        assert table[0].split() == ["RECEIVED", "SOURCE", "FEED", "KIND", "FIELD", "ORIGIN", "REPLAYED", "REASON"]
        assert sorted(line.split()[2] for line in table[1:3]) == ["tailer", "webhook"]  # after date and time
        assert table[-1] == "2 dead letters"
        shown = run_cli(settings, "dead-letters", "show", place_origin)
        assert "和平街3号" in shown.stdout and "unknown_place" in shown.stdout

        # 8. Fix the config (the building and the level 4), replay: the fixed ones are stored once, the gas
        # leak (a category nobody mapped) stays.
        with open(config / "electrical-fire-places.csv", "a", encoding="utf-8") as places:
            places.write("和平街3号,,,PA02-C07-G03\n")
        fixed = (
            (config / "feeds.toml")
            .read_text(encoding="utf-8")
            .replace('{ "1" = 4, "2" = 3,', '{ "1" = 4, "4" = 5, "2" = 3,', 1)
        )
        (config / "feeds.toml").write_text(fixed, encoding="utf-8")
        replayed = run_cli(settings, "dead-letters", "replay")
        assert "6 pending dead letters: 4 replayed, 2 still refused (unknown_category 2)" in replayed.stdout
        fixed_ids = {"electrical-fire-EF-0999-A7", "electrical-fire-EF-0001-A8"}

        def all_stored() -> bool | None:
            assert worker.alive, worker.log_tail()
            return events.count_distinct(executor, source=FEED) == 7 or None

        wait_for(all_stored, timeout=30, what="the replayed events", interval=0.3)
        copies = executor.query(
            "SELECT event_id, count() FROM events FINAL WHERE event_id IN %(ids)s GROUP BY event_id",
            {"ids": tuple(sorted(fixed_ids))},
        )
        assert dict(copies) == dict.fromkeys(fixed_ids, 1)
        marked = dead_letters.recent(executor, feed=FEED, replayed=True)
        assert sorted(r["replayed_as"] for r in marked) == sorted([*fixed_ids, *fixed_ids])

        # Nothing twice: a second replay finds only what still fails.
        again = run_cli(settings, "dead-letters", "replay")
        assert "2 pending dead letters: 0 replayed, 2 still refused" in again.stdout
        assert worker.alive and sink.alive
    finally:
        executor.close()
        sink.stop()
        worker.stop()
