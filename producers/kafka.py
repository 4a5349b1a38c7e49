"""One Kafka producer shared by every feed: envelope dicts in, JSON records keyed by grid out.

The key is the grid id, so the default partitioner sends all of a grid's events to the partition the worker
keeps that grid's window state on (``pingan.partitioning.partition_for_key``). An envelope that carries only a
location is located with the grid registry to find its key; one outside every grid goes out with no key and
the worker dead-letters it (``outside_grids``): the producer does not judge events, the stream does.

Delivery is acknowledged by all in-sync replicas (``acks="all"``) and every ``send`` waits for it. The
idempotent producer follows ``settings.idempotent_producer``: the local Tansu broker rejects InitProducerId,
real Kafka wants it on. ``send_many`` puts the events of one partition's grids together in event batch records
(``schemas/batch.py``, up to ``settings.producer_batch_events`` each; one event alone stays a plain record)
and creates every send future before awaiting any, so records share broker round trips.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from pingan.errors import InvalidEvent, ServiceError
from pingan.grids import GridRegistry
from pingan.schemas.batch import records_to_send
from pingan.settings import Settings

__all__ = ["EventProducer", "encode_event"]

log = logging.getLogger(__name__)

LINGER_MS = 10  # a 10 ms wait fills batches at demo rates and is invisible next to 5-minute windows
MAX_BATCH_BYTES = 256 * 1024  # ~500 envelopes per partition batch instead of the default ~35
SEND_CHUNK = 10_000  # futures in flight per gather: bounds memory for a huge iterable


def encode_event(envelope: Mapping[str, Any]) -> bytes:
    """The record value: the envelope as compact JSON (datetimes as RFC 3339)."""
    try:
        return orjson.dumps(envelope)
    except TypeError as exc:
        raise InvalidEvent("invalid_field", f"the envelope cannot be serialised to JSON: {exc}") from None


class EventProducer:
    """``async with EventProducer(settings, registry) as producer: await producer.send_many(events)``."""

    def __init__(
        self,
        settings: Settings,
        registry: GridRegistry | None = None,
        *,
        topic: str | None = None,
        linger_ms: int = LINGER_MS,
        max_batch_size: int = MAX_BATCH_BYTES,
        client_id: str = "pingan-producer",
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.topic = topic or settings.topic_events
        self.sent = 0  # records acknowledged by the broker since start
        self.batch_events = settings.producer_batch_events
        self._linger_ms = linger_ms
        self._max_batch_size = max_batch_size
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self.settings.idempotent_producer,
            linger_ms=self._linger_ms,
            max_batch_size=self._max_batch_size,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise ServiceError(
                f"cannot connect a producer to Kafka at {self.settings.kafka_bootstrap}: {exc!r}"
            ) from exc
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is buffered and close. Safe to call twice."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def key_for(self, envelope: Mapping[str, Any]) -> bytes | None:
        """The grid id as bytes: the envelope's own, else the grid containing its location, else None."""
        grid_id = envelope.get("grid_id")
        if isinstance(grid_id, str) and grid_id:
            return grid_id.encode()
        location = envelope.get("location")
        if self.registry is None or not isinstance(location, Mapping):
            return None
        lon, lat = location.get("lon"), location.get("lat")
        if not isinstance(lon, int | float) or not isinstance(lat, int | float):
            return None
        grid = self.registry.locate(float(lon), float(lat))
        return None if grid is None else grid.grid_id.encode()

    def _running(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise ServiceError("the event producer is not started (use `async with EventProducer(...)`)")
        return self._producer

    async def send(self, envelope: Mapping[str, Any]) -> RecordMetadata:
        """Send one event and wait until the broker has it. Returns its partition and offset."""
        producer = self._running()
        value, key = encode_event(envelope), self.key_for(envelope)
        try:
            delivery = await producer.send(self.topic, value, key=key)
            metadata: RecordMetadata = await delivery
        except KafkaError as exc:
            raise ServiceError(
                f"event {envelope.get('event_id')!r} was not delivered to {self.topic}: {exc!r}"
            ) from exc
        self.sent += 1
        return metadata

    async def send_many(self, envelopes: Iterable[Mapping[str, Any]]) -> int:
        """Send events pipelined and wait for all of them. Returns how many were delivered.

        Raises ServiceError if any was not delivered (after waiting for the rest, so the count in the message
        is exact), InvalidEvent if one cannot be serialised (nothing after it is sent).
        """
        producer = self._running()
        delivered = 0
        chunk: list[tuple[bytes, bytes | None]] = []
        for envelope in envelopes:
            chunk.append((encode_event(envelope), self.key_for(envelope)))
            if len(chunk) >= SEND_CHUNK:
                delivered += await self._send_chunk(producer, chunk)
                chunk = []
        if chunk:
            delivered += await self._send_chunk(producer, chunk)
        return delivered

    async def _send_chunk(self, producer: AIOKafkaProducer, records: list[tuple[bytes, bytes | None]]) -> int:
        planned = records_to_send(
            [(key, value) for value, key in records], partitions=self.settings.topic_partitions,
            max_events=self.batch_events,
        )  # fmt: skip
        pending: list[tuple[int, asyncio.Future[RecordMetadata]]] = []  # (events in the record, its ack)
        failure: BaseException | None = None
        try:
            for key, partition, value, carried in planned:
                # send() only waits for buffer space; the returned future resolves on the broker's ack.
                pending.append((carried, await producer.send(self.topic, value, key=key, partition=partition)))
        except KafkaError as exc:
            failure = exc
        finally:
            # Always collect what was started: an unawaited failed future would surface later as an error.
            outcomes = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        acked = zip(pending, outcomes, strict=True)
        delivered = sum(n for (n, _), outcome in acked if not isinstance(outcome, BaseException))
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        self.sent += delivered
        if failure is not None or errors:
            first = failure or errors[0]
            raise ServiceError(
                f"{len(records) - delivered} of {len(records)} events were not delivered to {self.topic} "
                f"({delivered} were): {first!r}"
            ) from first
        return delivered
