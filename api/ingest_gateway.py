"""The ingest gateway's I/O: the producer it owns, and delivery with a deadline.

A request is answered only once the broker has acknowledged every record it produced (``acks=all``), both
the accepted events and the dead letters of the rejected ones. If the broker cannot be reached or does not
acknowledge within ``ingest_delivery_timeout_seconds``, the answer is 503 with Retry-After and nothing of
the request counts as accepted; some of its records may still arrive, so a producer retries with the same
event ids and the worker's event-id dedupe absorbs the repeats (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from pydantic import BaseModel

from pingan.api.errors import ApiError
from pingan.api.ingest_auth import KeyRing
from pingan.api.ingest_batch import Accepted, ItemRules, Outcome
from pingan.api.ingest_limits import BROKER_RETRY_AFTER_SECONDS, InFlightLimiter, Permit
from pingan.api.webhooks import Webhooks
from pingan.clock import Clock
from pingan.dead_letter import DeadLetter, http_origin, to_message
from pingan.errors import ServiceError
from pingan.feeds import FeedRules, FeedSpec
from pingan.grids import GridRegistry
from pingan.producers.adapters.base import redact
from pingan.producers.kafka import EventProducer
from pingan.schemas.batch import records_to_send
from pingan.schemas.payloads import SOURCE_PAYLOADS
from pingan.settings import Settings
from pingan.topics import ensure_topics

__all__ = ["IngestGateway", "IngestProducer", "KafkaPublisher", "Publisher"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_SECONDS = 10.0

Headers = list[tuple[str, bytes]]
EventRecord = tuple[bytes, bytes]  # (key, value)
DeadLetterRecord = tuple[bytes, Headers]  # (value, headers)


class Publisher(Protocol):
    async def deliver(
        self, events: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRecord], *, topic: str | None = None
    ) -> None:
        """Produce (key, value) events (on ``topic``, default the events topic) and (value, headers) dead
        letters; return once the broker has all."""
        ...

    async def close(self) -> None: ...


class IngestProducer(EventProducer):
    """The shared producer, taking records the gateway has already encoded and keyed, plus dead letters."""

    async def deliver(
        self, events: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRecord], *, topic: str | None = None
    ) -> None:
        producer = self._running()
        topic = topic or self.topic
        # A request's events for one partition's grids go as one event batch record (schemas/batch.py) when
        # they go to the events topic the worker reads; a feed's own topic gets plain records.
        planned = records_to_send(
            events, partitions=self.settings.topic_partitions,
            max_events=self.batch_events if topic == self.settings.topic_events else 1,
        )  # fmt: skip
        pending: list[tuple[int, asyncio.Future[Any]]] = []  # (records it carries, its ack)
        failure: BaseException | None = None
        try:
            # send() only waits for buffer space; each future resolves on the broker's ack, so all of a
            # request's records share round trips.
            for key, partition, value, carried in planned:
                pending.append((carried, await producer.send(topic, value, key=key, partition=partition)))
            for value, headers in dead_letters:
                pending.append((1, await producer.send(self.settings.topic_dead_letters, value, headers=headers)))
        except KafkaError as exc:
            failure = exc
        finally:
            # Collect everything started, or a failed future would surface later as an unretrieved error.
            outcomes = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        acked = zip(pending, outcomes, strict=True)
        delivered = sum(n for (n, _), outcome in acked if not isinstance(outcome, BaseException))
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        self.sent += delivered
        if failure is not None or errors:
            first = failure or errors[0]
            total = len(events) + len(dead_letters)
            raise ServiceError(f"{total - delivered} of {total} records not delivered: {first!r}")


class KafkaPublisher:
    """Owns an :class:`IngestProducer`, started on first use so the API starts (and serves queries) while the
    broker is down. After a failure it refuses at once for ``cooldown`` seconds instead of letting every
    request pay a connection attempt."""

    def __init__(
        self,
        settings: Settings,
        *,
        start_timeout: float,
        cooldown: float = BROKER_RETRY_AFTER_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._start_timeout = start_timeout
        self._cooldown = cooldown
        self._monotonic = monotonic
        self._producer: IngestProducer | None = None
        self._down_until = 0.0
        self._lock = asyncio.Lock()

    def _refuse_if_cooling_down(self) -> None:
        if self._monotonic() < self._down_until:
            raise ServiceError(f"the broker at {self._settings.kafka_bootstrap} failed recently")

    async def _running(self) -> IngestProducer:
        if self._producer is not None:
            return self._producer
        self._refuse_if_cooling_down()
        async with self._lock:
            if self._producer is None:
                self._refuse_if_cooling_down()  # another request may have failed while this one waited
                producer = IngestProducer(self._settings, client_id="pingan-ingest")
                try:
                    async with asyncio.timeout(self._start_timeout):
                        # Tansu creates a topic it is asked about with its own partition count; creating
                        # them first keeps keys on the partitions the worker expects.
                        await ensure_topics(self._settings)
                        await producer.start()
                except (ServiceError, TimeoutError) as exc:
                    await producer.stop()
                    self._down_until = self._monotonic() + self._cooldown
                    raise ServiceError(f"cannot start the ingest producer: {exc!r}") from exc
                self._producer = producer
            return self._producer

    async def deliver(
        self, events: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRecord], *, topic: str | None = None
    ) -> None:
        producer = await self._running()
        try:
            await producer.deliver(events, dead_letters, topic=topic)
        except ServiceError:
            self._down_until = self._monotonic() + self._cooldown
            raise

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            # Bounded: with the broker gone, flushing would wait for the producer's own request timeout.
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await producer.stop()
        except TimeoutError:
            log.warning(
                "the ingest producer did not flush within %.0f s; unacknowledged records are dropped "
                "(their requests were answered 503)",
                CLOSE_TIMEOUT_SECONDS,
            )


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "broker_unavailable", message, headers={"Retry-After": str(BROKER_RETRY_AFTER_SECONDS)})


def _log_late_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("a delivery answered 503 after its timeout finally failed: %s", exc)


@dataclass(frozen=True)
class IngestGateway:
    """Everything the ingest route needs; created and closed by the app's lifespan."""

    settings: Settings
    keys: KeyRing
    rules: ItemRules
    limiter: InFlightLimiter
    publisher: Publisher
    clock: Clock
    webhooks: Webhooks = field(default_factory=lambda: Webhooks({}, {}))

    @classmethod
    def create(
        cls,
        settings: Settings,
        registry: GridRegistry,
        clock: Clock,
        *,
        feeds: Mapping[str, FeedSpec] | None = None,
        payload_models: Mapping[str, type[BaseModel]] = SOURCE_PAYLOADS,
    ) -> IngestGateway:
        """Reads the keys file (ConfigError if it is missing or wrong); connects nothing.

        ``feeds`` must be the worker's registry (``pingan.feeds.load_feeds``), or the gateway would accept
        events the worker then dead-letters; its rules (:class:`pingan.feeds.FeedRules`) are the ones every
        way in applies, and each feed with a mapper gets a webhook. Without it, only ``payload_models``
        are checked and there are no webhooks.
        """
        limits = {
            "max_event_bytes": settings.max_event_bytes,
            "max_future": timedelta(seconds=settings.max_future_seconds),
        }
        if feeds is None:
            rules = ItemRules.of(registry, dict(payload_models), **limits)
        else:
            rules = ItemRules(registry, FeedRules.for_settings(settings, feeds))
        return cls(
            settings=settings,
            keys=KeyRing.load(settings.ingest_keys_path),
            rules=rules,
            limiter=InFlightLimiter(settings.ingest_max_in_flight),
            publisher=KafkaPublisher(settings, start_timeout=settings.ingest_delivery_timeout_seconds),
            clock=clock,
            webhooks=Webhooks.for_feeds(settings, feeds or {}, registry),
        )

    async def publish(
        self,
        permit: Permit,
        outcomes: Sequence[Outcome],
        producer: str,
        *,
        feed: str = "",
        request_id: str = "",
        source: str = "gateway",
        topic: str | None = None,
    ) -> None:
        """Produce accepted events keyed by grid and rejected items as dead letters; wait for the broker.

        A rejected item's dead letter names the request (``http:<producer>/<request id>#<index>``), the feed
        and the way in (``source``: gateway or webhook); accepted events go to ``topic`` (a webhook's feed may
        name its own), default the events topic. An item too large for the broker keeps a truncated
        copy with its size and SHA-256, so one oversize item is refused alone instead of failing the request.

        Raises ApiError 503 when the broker is down or slow. The delivery itself is never cancelled (a
        cancelled send may still reach the broker); if the request stops waiting, its in-flight slot stays
        taken until the delivery ends, so retries cannot pile records up in the producer's buffer.
        """
        now = self.clock.now()
        events = [(o.key, o.value) for o in outcomes if isinstance(o, Accepted)]
        letters = []
        for outcome in outcomes:
            if isinstance(outcome, Accepted):
                continue
            if outcome.letter is not None:
                letter = outcome.letter  # a webhook's adapter made it, redacted already
            else:
                # Personal identifiers never reach Kafka, not even in a refused envelope.
                cleaned = redact(outcome.raw, self._pseudonym_key)
                letter = DeadLetter.of(
                    outcome.error,
                    cleaned,
                    origin=http_origin(f"{producer}/{request_id}", outcome.index),
                    received_at=now,
                    source=source,
                    feed=feed,
                    redacted=cleaned != outcome.raw,
                )
            message = to_message(letter)
            letters.append((message.value, list(message.headers)))
        task = asyncio.create_task(self.publisher.deliver(events, letters, topic=topic))
        try:
            async with asyncio.timeout(self.settings.ingest_delivery_timeout_seconds):
                await asyncio.shield(task)
        except TimeoutError:
            permit.release_when_done(task)
            task.add_done_callback(_log_late_failure)
            raise _unavailable(
                f"the broker did not acknowledge within {self.settings.ingest_delivery_timeout_seconds:g} s; "
                "retry with the same event ids"
            ) from None
        except asyncio.CancelledError:
            permit.release_when_done(task)
            task.add_done_callback(_log_late_failure)
            raise
        except ServiceError as exc:
            log.warning("ingest from %s not delivered: %s", producer, exc)
            raise _unavailable("the event broker is unavailable; retry shortly with the same event ids") from None

    @property
    def _pseudonym_key(self) -> bytes:
        return self.settings.pseudonym_key.get_secret_value().encode()

    async def close(self) -> None:
        await self.publisher.close()
