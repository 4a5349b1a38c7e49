"""Poison records on the real broker: each one that used to stop the worker (or every event behind it),
interleaved with valid events. The worker must stay up, store every valid event exactly once, and keep every
bad record once in the dead-letter table and on the dead-letter topic, with a reason."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pingan.dead_letter import HEADER_RAW_SHA256, HEADER_RAW_SIZE, MAX_RAW_BYTES
from pingan.errors import StorageUnavailable
from pingan.settings import Settings
from pingan.store.client import connect
from pingan.topics import ensure_topics
from tests.support.events import call110
from tests.support.kafka import read_topic
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration

BIG = 1_500_000  # the local broker takes it; Kafka's default limit (1 MB) would not, nor the dead-letter copy


def _corpus(grid_id: str, now: datetime) -> list[tuple[str, bytes, int | None]]:
    """(kind the record must be dead-lettered as, value, record timestamp in ms)."""
    at = now - timedelta(minutes=1)

    def envelope(event_id: str, **fields: object) -> bytes:
        return orjson.dumps({**call110(event_id, grid_id, at), **fields})

    return [
        ("missing_field", b"{}", 10**16),  # year 318857: crashed the worker at every restart
        ("out_of_range", envelope("pre-epoch", event_time="1969-12-31T23:59:59Z"), None),
        ("out_of_range", envelope("year-one", event_time="0001-01-01T00:00:00Z"), None),
        ("out_of_range", envelope("minus-one", event_time=-1), None),
        ("future_timestamp", envelope("far-receive", receive_time="2200-01-01T00:00:00Z"), None),
        ("oversize", b'{"event_id": "huge", "pad": "' + b"x" * BIG + b'"}', None),  # retried forever as a dead letter
        ("bad_json", b"{bad", 10**13),  # its received_at could not be stored: retried forever
    ]


async def _produce(settings: Settings, records: list[tuple[bytes | None, bytes, int | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=4 * BIG)
    await producer.start()
    try:
        sent = [await producer.send(settings.topic_events, value, key=key, timestamp_ms=timestamp)
                for key, value, timestamp in records]  # fmt: skip
        for future in sent:
            await future
    finally:
        await producer.stop()


async def test_poison_records_are_dead_lettered_and_never_stall_the_worker(pipeline_settings: Settings, worker) -> None:
    settings = pipeline_settings
    grid_id = "PA01-C01-G01"
    now = datetime.now(UTC)
    corpus = _corpus(grid_id, now)
    await ensure_topics(settings)
    valid = []
    records: list[tuple[bytes | None, bytes, int | None]] = []
    for i, (_, value, timestamp) in enumerate(corpus):
        # valid events before and after each bad one, on the same partition (same key), so that a stall shows
        for j in range(3):
            event = call110(f"ok-{i}-{j}", grid_id, now - timedelta(seconds=90 - i))
            valid.append(event["event_id"])
            records.append((grid_id.encode(), orjson.dumps(event), None))
        records.append((grid_id.encode(), value, timestamp))
    await _produce(settings, records)

    executor = connect(settings)
    try:

        def stored() -> list[tuple]:
            assert worker.alive, worker.log_tail()
            try:
                return executor.query("SELECT event_id, count() FROM events GROUP BY event_id ORDER BY event_id")
            except StorageUnavailable:  # the worker has not created its database yet
                return []

        rows = wait_for(lambda: len(r := stored()) == len(valid) and r, timeout=60, what="every valid event")
        assert {event_id: n for event_id, n in rows} == dict.fromkeys(sorted(valid), 1)  # exactly once each
        letters = wait_for(
            lambda: len(r := executor.query("SELECT kind, reason, raw_size, received_at FROM dead_letters FINAL"
                                            " ORDER BY kafka_offset")) == len(corpus) and r,
            timeout=30, what="every bad record in the dead-letter table",
        )  # fmt: skip
    finally:
        executor.close()
    assert [kind for kind, *_ in letters] == [kind for kind, _, _ in corpus]
    assert all(reason for _, reason, _, _ in letters)
    # received_at: the record's timestamp when ClickHouse can hold it, else the worker's clock
    assert all(abs((received_at.replace(tzinfo=UTC) - now).total_seconds()) < 120 for *_, received_at in letters)

    topic = await read_topic(settings, settings.topic_dead_letters, len(corpus), settle_ms=500)
    assert len(topic) == len(corpus)  # once each: no re-sent batches
    by_kind = [dict(r.headers) for r in topic]
    assert sorted(h["pingan-error-kind"].decode() for h in by_kind) == sorted(kind for kind, _, _ in corpus)
    huge = next((r, dict(r.headers)) for r in topic if dict(r.headers)["pingan-error-kind"] == b"oversize")
    record, headers = huge
    assert len(record.value) == MAX_RAW_BYTES < BIG  # a truncated copy the broker takes...
    assert int(headers[HEADER_RAW_SIZE]) == len(corpus[5][1])  # ...with the whole one's size and hash
    assert headers[HEADER_RAW_SHA256].decode() == hashlib.sha256(corpus[5][1]).hexdigest()
    assert worker.alive
