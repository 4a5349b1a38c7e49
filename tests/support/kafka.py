"""Produce and read back raw messages on the real broker (tests only)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from pingan.settings import Settings


async def produce(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in messages]
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
