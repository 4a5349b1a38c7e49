"""Produce and read back raw messages on the real broker (tests only)."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from pingan.schemas.batch import is_batch, records_to_send, split_batch
from pingan.settings import Settings


async def produce(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Write ``(key, value)`` messages in order, each to its key's partition."""
    await produce_records(settings, topic, [(key, None, value) for key, value in messages])


def mixed_records(
    messages: list[tuple[bytes | None, bytes]], *, partitions: int, chunk: int = 100, max_events: int = 25
) -> list[tuple[bytes | None, int | None, bytes]]:
    """The messages as ``(key, partition, value)`` records, both formats the worker reads: chunks of ``chunk``
    messages alternate between event batch records (as the project's producers write them, up to
    ``max_events`` envelopes each) and one event per record. A value that is not JSON goes into a batch as a
    JSON string, so it stays one bad envelope instead of spoiling its batch."""
    out: list[tuple[bytes | None, int | None, bytes]] = []
    for number, first in enumerate(range(0, len(messages), chunk)):
        part = messages[first : first + chunk]
        if number % 2:
            out.extend((key, None, value) for key, value in part)
            continue
        envelopes = [(key, value if _is_json(value) else orjson.dumps(value.decode(errors="replace")))
                     for key, value in part]  # fmt: skip
        out.extend((key, partition, value)
                   for key, partition, value, _ in records_to_send(envelopes, partitions=partitions,
                                                                   max_events=max_events))  # fmt: skip
    return out


def _is_json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


async def produce_records(
    settings: Settings, topic: str, records: list[tuple[bytes | None, int | None, bytes]]
) -> None:
    """Write ``(key, partition, value)`` records in order (partition None: by key, as the default partitioner)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5, max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        pending = [await producer.send(topic, value, key=key, partition=partition) for key, partition, value in records]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def read_topic(
    settings: Settings, topic: str, expected: int, *, timeout: float = 30.0, settle_ms: int = 0
) -> list[ConsumerRecord]:
    """Read every partition from the beginning, without a consumer group, until ``expected`` records arrived or
    the timeout; then poll ``settle_ms`` more, so that a test can see records beyond the expected (duplicates)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,  # no group to join: reading starts at once instead of after a ~5 s rebalance
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        if settle_ms:
            for batch in (await consumer.getmany(timeout_ms=settle_ms)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def read_envelopes(
    settings: Settings, topic: str, expected: int, *, timeout: float = 30.0, settle_ms: int = 300
) -> list[bytes]:
    """The envelopes on ``topic``, event batch records (schemas/batch.py) opened, once ``expected`` of them
    arrived or the timeout passed (then ``settle_ms`` more, to see any beyond the expected)."""
    envelopes: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.1, deadline - time.monotonic())
        records = await read_topic(settings, topic, 1, timeout=left, settle_ms=settle_ms)
        envelopes = [e for r in records for e in (split_batch(r.value) if is_batch(r.value) else [r.value])]
        if len(envelopes) >= expected or time.monotonic() >= deadline:
            return envelopes
