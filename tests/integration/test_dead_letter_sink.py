"""The dead-letter sink against the real broker and ClickHouse: every message becomes one row keyed by its
origin, a message seen again (another sink, a crash before the commit) adds nothing and keeps a replay mark."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from pingan.dead_letter import DeadLetter, to_message
from pingan.dead_letter_sink import DeadLetterSink
from pingan.errors import InvalidEvent
from pingan.producers.adapters.delivery import AdapterProducer, OutRecord
from pingan.settings import Settings
from pingan.store import dead_letters
from pingan.store.client import connect
from pingan.topics import ensure_topics

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


async def _publish(settings: Settings, messages: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    async with AdapterProducer(settings, client_id="test-dead-letters") as producer:
        records = [OutRecord(settings.topic_dead_letters, None, value, tuple(headers)) for value, headers in messages]
        assert await producer.send_records(records) == []


async def _drain(settings: Settings, expected: int) -> int:
    """Run a sink until the table has ``expected`` rows (or a little longer when it already has), then stop."""
    sink = DeadLetterSink(settings)
    task = asyncio.create_task(sink.run())
    executor = connect(settings)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            assert not task.done(), task
            try:
                if len(dead_letters.recent(executor)) >= expected and sink.stored + sink.skipped >= 1:
                    break
            except Exception:  # the database appears when the sink has migrated
                pass
            await asyncio.sleep(0.2)
    finally:
        sink.stop()
        await task
        executor.close()
    return sink.stored


async def test_the_sink_stores_each_dead_letter_once_and_keeps_replay_marks(settings: Settings) -> None:
    await ensure_topics(settings)
    gateway = DeadLetter.of(InvalidEvent("oversize", "too big"), b"x" * 5000, origin="http:cad/r1#0",
                            received_at=NOW, source="gateway", feed="call110", max_bytes=100)  # fmt: skip
    tailer = DeadLetter.of(InvalidEvent("unknown_place", "no place", "address"), b'{"address": "x"}',
                           origin="file:/spool/a.jsonl@812", received_at=NOW - timedelta(seconds=1), source="tailer",
                           feed="electrical_fire", adapter="pingan.producers.adapters.device:map_record")  # fmt: skip
    messages = [(m.value, list(m.headers)) for m in (to_message(gateway), to_message(tailer))]
    # what the worker writes today: the four original headers only
    messages.append((b"{bad", [("pingan-error-kind", b"bad_json"), ("pingan-error-field", b""),
                               ("pingan-error-reason", b"not JSON"), ("pingan-origin", b"t.events/2/41")]))  # fmt: skip
    await _publish(settings, messages)

    assert await _drain(settings, 3) == 3
    executor = connect(settings)
    try:
        rows = {r["origin"]: r for r in dead_letters.recent(executor)}
        assert set(rows) == {"http:cad/r1#0", "file:/spool/a.jsonl@812", "t.events/2/41"}
        assert (rows["http:cad/r1#0"]["raw_size"], len(rows["http:cad/r1#0"]["raw"])) == (5000, 100)
        assert (rows["file:/spool/a.jsonl@812"]["source"], rows["file:/spool/a.jsonl@812"]["kind"]) == (
            "tailer", "unknown_place"
        )  # fmt: skip
        assert (rows["t.events/2/41"]["source"], rows["t.events/2/41"]["kind"]) == ("worker", "bad_json")

        # A replay marks one; the same dead letter arriving again (a producer's retry) adds nothing.
        dead_letters.mark_replayed(executor, rows["file:/spool/a.jsonl@812"], at=NOW, event_id="ef-1")
        await _publish(settings, messages[1:2])
        assert await _drain(settings, 3) == 0
        again = {r["origin"]: r for r in dead_letters.recent(executor)}
        assert len(again) == 3 and again["file:/spool/a.jsonl@812"]["replayed_as"] == "ef-1"
        assert executor.query("SELECT count() FROM dead_letters FINAL")[0][0] == 3
    finally:
        executor.close()
