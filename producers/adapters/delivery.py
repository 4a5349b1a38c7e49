"""The adapters' I/O shell: mapped records to the broker, with retries, and nothing acknowledged early.

:meth:`FeedPublisher.publish` takes one bounded batch of :class:`~pingan.producers.adapters.base.Mapped` records
and returns only when the broker has acknowledged every one of them (``acks=all``): envelopes on the
feed's topic keyed by grid (the shared :class:`pingan.producers.kafka.EventProducer` logic), bad records on the
dead-letter topic as :func:`pingan.dead_letter.to_message` writes every dead letter (kind, field, reason,
origin, way in, feed, adapter, size and SHA-256 in headers; ``pingan-redacted: 1`` when personal
identifiers were pseudonymised out of the bytes).

Broker errors are retried with capped exponential backoff, resending only the records whose send failed;
a record whose ack was lost after the broker stored it is sent twice, which the worker's event-id dedupe
absorbs. ``RetryPolicy.max_attempts=None`` retries until delivered: right for a tailer, which must not
skip ahead; an HTTP shell sets a limit and answers 503.

Buffers are bounded by the callers: a tailer has one batch in flight and reads nothing more until it is
acknowledged; a webhook has one request body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from aiokafka.errors import KafkaError

from pingan.dead_letter import to_message
from pingan.errors import ServiceError
from pingan.grids import GridRegistry
from pingan.producers.adapters.base import Mapped
from pingan.producers.kafka import EventProducer, encode_event
from pingan.settings import Settings

__all__ = ["AdapterProducer", "DeliveryReport", "FeedPublisher", "OutRecord", "RetryPolicy", "out_records"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class RetryPolicy:
    initial_delay: float = 0.2
    max_delay: float = 10.0
    max_attempts: int | None = None  # None: until delivered

    def delays(self) -> Iterator[float]:
        """The wait before each retry; ends when the attempts are used up."""
        delay, attempt = self.initial_delay, 1
        while self.max_attempts is None or attempt < self.max_attempts:
            yield delay
            delay = min(delay * 2, self.max_delay)
            attempt += 1


@dataclass
class DeliveryReport:
    events: int = 0
    dead_letters: int = 0
    retries: int = 0

    def add(self, other: DeliveryReport) -> None:
        self.events += other.events
        self.dead_letters += other.dead_letters
        self.retries += other.retries


def out_records(
    mapped: Sequence[Mapped], *, topic: str, dead_letter_topic: str, key_for: Callable[[dict], bytes | None]
) -> list[OutRecord]:
    """What to send for a batch of mapped records, in input order. Pure."""
    records = []
    for item in mapped:
        if item.envelope is not None:
            records.append(OutRecord(topic, key_for(item.envelope), encode_event(item.envelope)))
            continue
        assert item.letter is not None
        message = to_message(item.letter)
        records.append(OutRecord(dead_letter_topic, None, message.value, message.headers))
    return records


class RecordSender(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def key_for(self, envelope: dict) -> bytes | None: ...

    async def send_records(self, records: Sequence[OutRecord]) -> list[int]: ...


class AdapterProducer(EventProducer):
    """The shared producer, able to send to any topic with headers and to say which sends failed."""

    async def send_records(self, records: Sequence[OutRecord]) -> list[int]:
        """Send all, wait for all acks; returns the indices of the records that were not delivered."""
        producer = self._running()
        started: list[tuple[int, asyncio.Future]] = []
        failed: list[int] = []
        try:
            for index, record in enumerate(records):
                try:
                    headers = list(record.headers)
                    future = await producer.send(record.topic, record.value, key=record.key, headers=headers)
                except KafkaError as exc:
                    log.debug("send of record %d failed before queueing: %r", index, exc)
                    failed.append(index)
                    continue
                started.append((index, future))
        finally:
            # Always collect what was started: an unawaited failed future would surface later as an error.
            outcomes = await asyncio.gather(*(future for _, future in started), return_exceptions=True)
        for (index, _), outcome in zip(started, outcomes, strict=True):
            if isinstance(outcome, KafkaError):
                failed.append(index)
            elif isinstance(outcome, BaseException):
                raise outcome
        self.sent += len(records) - len(failed)
        return sorted(failed)


class FeedPublisher:
    """``async with FeedPublisher(settings, topic=...) as publisher: await publisher.publish(mapped)``."""

    def __init__(
        self,
        settings: Settings,
        registry: GridRegistry | None = None,
        *,
        topic: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        sender: RecordSender | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        client_id: str = "pingan-adapter",
    ) -> None:
        self.topic = topic or settings.topic_events
        self.dead_letter_topic = settings.topic_dead_letters
        self.retry = retry
        self.report = DeliveryReport()
        self._sender: RecordSender = sender or AdapterProducer(
            settings, registry, topic=self.topic, client_id=client_id
        )
        self._sleep = sleep

    async def start(self) -> None:
        delays = self.retry.delays()
        while True:
            try:
                await self._sender.start()
                return
            except ServiceError as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                log.warning("cannot reach the broker, retrying in %.1fs: %s", delay, exc)
                await self._sleep(delay)

    async def stop(self) -> None:
        await self._sender.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def publish(self, mapped: Sequence[Mapped]) -> DeliveryReport:
        """Deliver one batch; returns when every record is acknowledged. Raises ServiceError when the retry
        policy gives up (then some records may have been delivered and the caller must not acknowledge)."""
        records = out_records(
            mapped, topic=self.topic, dead_letter_topic=self.dead_letter_topic, key_for=self._sender.key_for
        )
        report = DeliveryReport(events=sum(1 for m in mapped if m.ok), dead_letters=sum(1 for m in mapped if not m.ok))
        pending = list(range(len(records)))
        delays = self.retry.delays()
        while pending:
            failed = await self._sender.send_records([records[i] for i in pending])
            pending = [pending[i] for i in failed]
            if not pending:
                break
            delay = next(delays, None)
            if delay is None:
                raise ServiceError(f"{len(pending)} of {len(records)} records were not delivered; giving up")
            report.retries += 1
            log.warning("%d of %d records not delivered, retrying in %.1fs", len(pending), len(records), delay)
            await self._sleep(delay)
        self.report.add(report)
        return report
