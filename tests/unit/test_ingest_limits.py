"""Gateway bounds without services: body size and type, the in-flight limiter, delivery deadlines (with stub
publishers), and the OpenAPI document of the route."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import orjson
import pytest

from pingan.api.app import create_app
from pingan.api.errors import ApiError
from pingan.api.ingest_auth import KeyRing
from pingan.api.ingest_batch import Accepted, ItemRules, Rejected, build_response, check_items
from pingan.api.ingest_gateway import DeadLetterRecord, EventRecord, IngestGateway
from pingan.api.ingest_limits import InFlightLimiter, check_content_headers, read_limited
from pingan.clock import FixedClock
from pingan.dead_letter import MAX_RAW_BYTES
from pingan.errors import InvalidEvent, ServiceError
from pingan.schemas.payloads import SOURCE_PAYLOADS
from tests.support.defaults import default_settings

NOW = datetime(2026, 11, 23, tzinfo=UTC)

# --- body size and type -----------------------------------------------------------------------------------


def _refusal(headers: dict[str, str], limit: int = 1000) -> ApiError:
    with pytest.raises(ApiError) as caught:
        check_content_headers(headers, limit)
    return caught.value


def test_content_headers_within_limits_pass() -> None:
    accepted: list[dict[str, str]] = [
        {},
        {"content-length": "1000"},
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "application/cloudevents-batch+json"},
        {"content-encoding": "identity"},
    ]
    for headers in accepted:
        check_content_headers(headers, 1000)


def test_content_headers_over_limit_or_not_plain_json_are_refused_before_reading() -> None:
    assert (_refusal({"content-length": "1001"}).status, _refusal({"content-length": "1001"}).code) == (
        413, "body_too_large"
    )  # fmt: skip
    assert _refusal({"content-length": "12x"}).status == 400
    assert (_refusal({"content-encoding": "gzip"}).status, _refusal({"content-type": "text/plain"}).status) == (
        415,
        415,
    )


async def _chunks(sizes: Sequence[int], consumed: list[int]) -> AsyncIterator[bytes]:
    for size in sizes:
        consumed.append(size)
        yield b"x" * size


async def test_read_limited_joins_chunks_and_stops_reading_past_the_limit() -> None:
    consumed: list[int] = []
    assert await read_limited(_chunks([400, 600], consumed), 1000) == b"x" * 1000
    consumed.clear()
    with pytest.raises(ApiError) as caught:
        await read_limited(_chunks([400, 601, 5000, 5000], consumed), 1000)
    assert (caught.value.status, caught.value.code) == (413, "body_too_large")
    assert consumed == [400, 601]  # nothing read after the limit was passed


# --- the in-flight limiter ----------------------------------------------------------------------------------


def test_limiter_answers_429_with_retry_after_when_full_and_frees_slots_on_exit() -> None:
    limiter = InFlightLimiter(2)
    with limiter.acquire(), limiter.acquire():
        with pytest.raises(ApiError) as caught, limiter.acquire():
            pass
        assert (caught.value.status, caught.value.code) == (429, "too_many_requests")
        assert caught.value.headers == {"Retry-After": "1"}
        assert limiter.in_use == 2
    assert limiter.in_use == 0
    with pytest.raises(RuntimeError), limiter.acquire():
        raise RuntimeError("a failing request still frees its slot")
    assert limiter.in_use == 0
    with pytest.raises(ValueError):
        InFlightLimiter(0)


async def test_a_detached_permit_is_freed_when_its_work_ends_not_when_the_request_does() -> None:
    limiter = InFlightLimiter(1)
    work: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with limiter.acquire() as permit:
        permit.release_when_done(work)
    assert limiter.in_use == 1
    work.set_result(None)
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert limiter.in_use == 0
    permit.release()  # idempotent
    assert limiter.in_use == 0


# --- delivery deadlines -------------------------------------------------------------------------------------


class StubPublisher:
    def __init__(self, *, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.delivered: list[tuple[list[EventRecord], list[DeadLetterRecord]]] = []
        self.topics: list[str | None] = []

    async def deliver(
        self, events: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRecord], *, topic: str | None = None
    ) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ServiceError("broker gone")
        self.delivered.append((list(events), list(dead_letters)))
        self.topics.append(topic)

    async def close(self) -> None:
        pass


def _gateway(publisher: StubPublisher, timeout: float = 1.0) -> IngestGateway:
    settings = default_settings(ingest_delivery_timeout_seconds=timeout, ingest_max_in_flight=1)
    return IngestGateway(
        settings=settings,
        keys=KeyRing(()),
        rules=ItemRules.of(None, SOURCE_PAYLOADS),  # type: ignore[arg-type]
        limiter=InFlightLimiter(1),
        publisher=publisher,
        clock=FixedClock(datetime(2026, 11, 23, tzinfo=UTC)),
    )


OUTCOMES = [Accepted(0, "a", b"G1", b"{1}"), Rejected(1, "b", InvalidEvent("bad_json", "no", None), b"{2}")]


async def test_publish_sends_events_keyed_and_rejected_items_as_dead_letters() -> None:
    publisher = StubPublisher()
    gateway = _gateway(publisher)
    with gateway.limiter.acquire() as permit:
        await gateway.publish(permit, OUTCOMES, "cad", feed="call110", request_id="r-1")
        await gateway.publish(permit, OUTCOMES[:1], "cad", feed="sensors", request_id="r-2", topic="t.sensors")
    [(events, letters), _] = publisher.delivered
    assert publisher.topics == [None, "t.sensors"]  # a webhook's feed may produce to its own topic
    assert events == [(b"G1", b"{1}")]
    [(value, headers)] = letters
    named = dict(headers)
    assert value == b"{2}"
    assert (named["pingan-origin"], named["pingan-source"], named["pingan-feed"]) == (
        b"http:cad/r-1#1", b"gateway", b"call110"
    )  # fmt: skip
    assert gateway.limiter.in_use == 0


async def test_a_refused_envelope_is_redacted_before_it_reaches_the_broker() -> None:
    item = {"event_id": "x", "payload": {"plate_hash": "川A·88888", "text": "call 13800001111"}}
    [outcome] = check_items([item], source="checkpoint", now=NOW, rules=ItemRules.of(None, SOURCE_PAYLOADS))
    publisher = StubPublisher()
    gateway = _gateway(publisher)
    with gateway.limiter.acquire() as permit:
        await gateway.publish(permit, [outcome], "kk", feed="checkpoint", request_id="r-3")
    [([], [(value, headers)])] = publisher.delivered
    assert b"88888" not in value and b"13800001111" not in value
    assert dict(headers)["pingan-redacted"] == b"1"


async def test_one_oversize_item_is_refused_alone_with_a_truncated_copy_the_broker_takes() -> None:
    """issue 8: a body just under 1 MiB that is one oversize item answered 503 broker_unavailable."""
    huge = b'{"event_id": "x", "payload": "' + b"x" * (1024 * 1024 - 64) + b'"}'
    [outcome] = check_items([orjson.loads(huge)], source="call110", now=NOW, rules=ItemRules.of(None, SOURCE_PAYLOADS))
    assert isinstance(outcome, Rejected) and outcome.error.kind == "oversize"
    publisher = StubPublisher()
    gateway = _gateway(publisher)
    with gateway.limiter.acquire() as permit:
        await gateway.publish(permit, [outcome], "cad", feed="call110", request_id="r-2")
    [([], [(value, headers)])] = publisher.delivered
    named = dict(headers)
    assert len(value) == MAX_RAW_BYTES and value == outcome.raw[:MAX_RAW_BYTES]
    assert int(named["pingan-raw-size"]) == len(outcome.raw) > MAX_RAW_BYTES
    assert named["pingan-raw-sha256"] == hashlib.sha256(outcome.raw).hexdigest().encode()
    assert b"first 262144 are kept" in named["pingan-error-reason"]
    status, body = build_response([outcome], "r-2")
    assert status == 422 and body["results"][0]["error"]["kind"] == "oversize"


async def test_a_failed_delivery_is_503_with_retry_after() -> None:
    gateway = _gateway(StubPublisher(fail=True))
    with pytest.raises(ApiError) as caught, gateway.limiter.acquire() as permit:
        await gateway.publish(permit, OUTCOMES, "cad")
    assert (caught.value.status, caught.value.code, caught.value.headers) == (
        503, "broker_unavailable", {"Retry-After": "5"}
    )  # fmt: skip
    assert gateway.limiter.in_use == 0


async def test_a_slow_delivery_is_503_and_keeps_its_slot_until_the_broker_answers() -> None:
    publisher = StubPublisher(delay=0.3)
    gateway = _gateway(publisher, timeout=0.05)
    with pytest.raises(ApiError) as caught, gateway.limiter.acquire() as permit:
        await gateway.publish(permit, OUTCOMES, "cad")
    assert caught.value.status == 503
    # The records are still in flight: the slot stays taken, so a retry is 429 rather than more buffering.
    assert gateway.limiter.in_use == 1
    with pytest.raises(ApiError, match="requests already"), gateway.limiter.acquire():
        pass
    await asyncio.sleep(0.4)
    assert publisher.delivered and gateway.limiter.in_use == 0


# --- OpenAPI ------------------------------------------------------------------------------------------------


def test_openapi_documents_the_ingest_route_its_bodies_and_key_schemes(settings) -> None:
    schema = create_app(settings).openapi()
    operation = schema["paths"]["/v1/ingest/{source}"]["post"]
    assert {"200", "207", "401", "403", "413", "422", "429", "503"} <= set(operation["responses"])
    assert operation["responses"]["207"]["content"]["application/json"]["schema"]["$ref"].endswith("IngestResponse")
    assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("IngestRejected")
    body = operation["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"single", "batch"}
    components = schema["components"]["schemas"]
    for ref in body["schema"]["oneOf"]:
        assert ref["$ref"].rsplit("/", 1)[1] in components
    assert "Location" in components and "examples" in components["IngestResponse"]
    assert set(schema["components"]["securitySchemes"]) == {"IngestBearer", "IngestApiKey"}
