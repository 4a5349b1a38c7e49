"""The ingest gateway over HTTP (in-process ASGI, with the app's lifespan) against the real broker: keys,
limits, per-item results, events read back from the topic keyed by grid, rejects on the dead-letter topic."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from pingan.api.app import create_app
from pingan.api.deps import ResourcesDep
from pingan.api.ingest import get_ingest
from pingan.api.ingest_auth import hash_key
from pingan.api.ingest_gateway import DeadLetterRecord, EventRecord, IngestGateway
from pingan.api.ingest_models import IngestRejected, IngestResponse
from pingan.api.models import ErrorBody
from pingan.clock import FixedClock
from pingan.dead_letter import MAX_RAW_BYTES, from_message
from pingan.partitioning import partition_for_key
from pingan.schemas.batch import is_batch, split_batch
from pingan.schemas.envelope import parse_event
from pingan.settings import Settings
from tests.support.defaults import shipped_registry
from tests.support.events import call110, camera
from tests.support.kafka import read_topic
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
AT = NOW - timedelta(minutes=2)
CAD_KEY, CAMS_KEY = "test-cad-key-0123456789", "test-cams-key-0123456789"


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    grids: list[str]

    async def post(self, source: str, body: Any, key: str | None = CAD_KEY, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return await self.client.post(f"/v1/ingest/{source}", content=content, headers=headers, **kwargs)


@asynccontextmanager
async def running_gateway(
    settings: Settings, tmp_path: Path, *, extra_keys: str = "", **overrides: Any
) -> AsyncIterator[Gateway]:
    keys = tmp_path / "ingest-keys.toml"
    keys.write_text(
        f'[[producer]]\nname = "cad"\nsources = ["call110", "camera"]\nkey_sha256 = ["{hash_key(CAD_KEY)}"]\n\n'
        f'[[producer]]\nname = "cams"\nsources = ["camera"]\nkey_sha256 = ["{hash_key(CAMS_KEY)}"]\n' + extra_keys
    )
    settings = settings.model_copy(update={"ingest_keys_path": keys, **overrides})
    registry = shipped_registry()
    app = create_app(settings, registry=registry, clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client:
            yield Gateway(app, client, settings, [grid.grid_id for grid in registry.grids])


@pytest.fixture
async def gateway(settings: Settings, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(settings, tmp_path) as running:
        yield running


def _error(response: httpx.Response, status: int, code: str) -> ErrorBody:
    assert response.status_code == status, response.text
    body = ErrorBody.model_validate(response.json())
    assert body.error.code == code, response.text
    return body


# --- keys ---------------------------------------------------------------------------------------------------


async def test_no_key_is_401_with_www_authenticate(gateway: Gateway) -> None:
    event = call110("e-1", gateway.grids[0], AT)
    for headers in ({}, {"Authorization": f"Basic {CAD_KEY}"}, {"X-API-Key": ""}):
        response = await gateway.post("call110", event, key=None, headers=headers)
        _error(response, 401, "missing_api_key")
        assert response.headers["www-authenticate"] == 'Bearer realm="pingan-ingest"'


async def test_a_wrong_key_is_401_by_either_header(gateway: Gateway) -> None:
    event = call110("e-1", gateway.grids[0], AT)
    response = await gateway.post("call110", event, key=CAD_KEY + "x")
    _error(response, 401, "invalid_api_key")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    _error(await gateway.post("call110", event, key=None, headers={"X-API-Key": "nope"}), 401, "invalid_api_key")
    # the stored hash is not a key
    _error(await gateway.post("call110", event, key=hash_key(CAD_KEY)), 401, "invalid_api_key")


async def test_a_key_not_scoped_to_the_source_is_403(gateway: Gateway) -> None:
    body = _error(await gateway.post("call110", call110("e-1", gateway.grids[0], AT), key=CAMS_KEY), 403,
                  "source_not_allowed")  # fmt: skip
    assert "'cams'" in body.error.message and body.error.field == "source"
    # scoped keys still work for their own source, through X-API-Key too
    ok = await gateway.post("camera", camera("c-1", gateway.grids[0], AT), key=None, headers={"X-API-Key": CAMS_KEY})
    assert ok.status_code == 200, ok.text


async def test_an_unknown_source_is_404_once_the_key_allows_it(settings: Settings, tmp_path: Path) -> None:
    radar = f'\n[[producer]]\nname = "radar"\nsources = ["radar"]\nkey_sha256 = ["{hash_key("k-radar-0123")}"]\n'
    async with running_gateway(settings, tmp_path, extra_keys=radar) as gateway:
        body = _error(await gateway.post("radar", {"event_id": "r-1"}, key="k-radar-0123"), 404, "unknown_source")
        assert "call110" in body.error.message


# --- limits -------------------------------------------------------------------------------------------------


async def test_oversize_bodies_are_413_declared_or_streamed(settings: Settings, tmp_path: Path) -> None:
    async with running_gateway(settings, tmp_path, ingest_max_body_bytes=4096, ingest_max_batch=3) as gateway:
        events = [call110(f"e-{i}", gateway.grids[i], AT) for i in range(20)]  # ~6 KB
        _error(await gateway.post("call110", {"events": events}), 413, "body_too_large")

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
            body = orjson.dumps({"events": events})
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        response = await gateway.client.post(
            "/v1/ingest/call110", content=chunked(), headers={"Authorization": f"Bearer {CAD_KEY}"}
        )
        assert "content-length" not in response.request.headers
        _error(response, 413, "body_too_large")
        # within the byte limit but over the batch limit
        _error(await gateway.post("call110", {"events": events[:4]}), 413, "too_many_events")
        assert (await gateway.post("call110", {"events": events[:3]})).status_code == 200


async def test_malformed_bodies_refuse_the_whole_request(gateway: Gateway) -> None:
    _error(await gateway.post("call110", b'{"events": ['), 400, "bad_json")
    _error(await gateway.post("call110", [call110("e-1", gateway.grids[0], AT)]), 422, "invalid_body")
    _error(await gateway.post("call110", b"{}", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")


# --- per-item results, and what reaches the topics ----------------------------------------------------------


def _by_event_id(records: Sequence[Any]) -> dict[str, tuple[Any, bytes]]:
    """Each envelope on the topic with the record that carried it (alone, or in an event batch record)."""
    found = {}
    for record in records:
        for value in split_batch(record.value) if is_batch(record.value) else [record.value]:
            found[orjson.loads(value)["event_id"]] = (record, value)
    return found


async def test_a_valid_batch_is_200_with_every_event_on_the_topic_keyed_by_grid(gateway: Gateway) -> None:
    grids = gateway.grids[:40]
    events = [call110(f"ok-{i}", grid, AT - timedelta(seconds=i)) for i, grid in enumerate(grids)]
    located = call110("ok-located", grids[0], AT)
    grid = shipped_registry().grids[7]
    del located["grid_id"], located["source"]  # source comes from the path
    located["location"] = {"lon": grid.centroid[0], "lat": grid.centroid[1]}
    events.append(located)

    response = await gateway.post("call110", {"events": events})
    assert response.status_code == 200, response.text
    body = IngestResponse.model_validate(response.json())
    assert (body.accepted, body.rejected) == (41, 0)
    assert [r.event_id for r in body.results] == [e["event_id"] for e in events]

    # A single event (not a batch) is a batch of one.
    single = await gateway.post("call110", call110("ok-single", grids[1], AT), key=None, headers={"X-API-Key": CAD_KEY})
    assert single.status_code == 200 and single.json()["results"] == [
        {"index": 0, "event_id": "ok-single", "status": "accepted"}
    ]

    # The response came after the broker's acks, so everything is readable now.
    topic = await read_topic(gateway.settings, gateway.settings.topic_events, 1, timeout=10, settle_ms=500)
    records = _by_event_id(topic)
    assert len(records) == 42
    # the request's events for one partition's grids came as one event batch record (the single one alone)
    assert len(topic) <= gateway.settings.topic_partitions + 1 and sum(is_batch(r.value) for r in topic) >= 1
    partitions = gateway.settings.topic_partitions
    for event in [*events, {"event_id": "ok-single", "grid_id": grids[1]}]:
        record, value = records[event["event_id"]]
        expected_grid = event.get("grid_id") or grid.grid_id
        assert record.key == (None if is_batch(record.value) else expected_grid.encode())
        assert record.partition == partition_for_key(expected_grid.encode(), partitions)
        parsed = parse_event(value, now=NOW)  # what the worker will see
        assert (parsed.source, parsed.receive_time) == ("call110", NOW)
    dead = await read_topic(gateway.settings, gateway.settings.topic_dead_letters, 1, timeout=0.5)
    assert dead == []


async def test_invalid_items_get_per_item_errors_and_go_to_dead_letters_while_valid_ones_are_produced(
    gateway: Gateway,
) -> None:
    g = gateway.grids
    items: list[Any] = [
        call110("good-0", g[0], AT),
        {**call110("bad-severity", g[1], AT), "severity": 9},
        call110("good-1", g[2], AT),
        {**call110("bad-grid", g[3], AT), "grid_id": "NO-SUCH-GRID"},
        camera("bad-source", g[4], AT),
        "not an object",
        call110("good-2", g[5], AT),
    ]
    response = await gateway.post("call110", {"events": items})
    assert response.status_code == 207, response.text
    body = IngestResponse.model_validate(response.json())
    assert (body.accepted, body.rejected) == (3, 4)
    results = {r.index: r for r in body.results}
    expected = {1: ("out_of_range", "severity"), 3: ("unknown_grid", "grid_id"), 4: ("source_mismatch", "source"),
                5: ("bad_json", None)}  # fmt: skip
    for index, (kind, field) in expected.items():
        error = results[index].error
        assert results[index].status == "rejected" and error is not None
        assert (error.kind, error.field) == (kind, field)
        assert error.reason
    assert results[5].event_id is None
    assert [r.index for r in body.results if r.status == "accepted"] == [0, 2, 6]

    settings = gateway.settings
    produced = _by_event_id(await read_topic(settings, settings.topic_events, 1, timeout=10, settle_ms=500))
    assert set(produced) == {"good-0", "good-1", "good-2"}
    record, _ = produced["good-1"]
    assert record.partition == partition_for_key(g[2].encode(), settings.topic_partitions)

    letters = await read_topic(settings, settings.topic_dead_letters, 4, timeout=10)
    assert len(letters) == 4
    by_kind = {dict(letter.headers)["pingan-error-kind"].decode(): letter for letter in letters}
    assert set(by_kind) == {"out_of_range", "unknown_grid", "source_mismatch", "bad_json"}
    index_of = {kind: index for index, (kind, _) in expected.items()}
    for kind, letter in by_kind.items():
        headers = dict(letter.headers)
        # the origin names the producer, the request and the item: found again in the dead-letter table
        assert headers["pingan-origin"] == f"http:cad/{body.request_id}#{index_of[kind]}".encode()
        assert (headers["pingan-source"], headers["pingan-feed"]) == (b"gateway", b"call110")
        assert headers["pingan-error-reason"].decode() == next(
            r.error.reason for r in body.results if r.error and r.error.kind == kind
        )
    assert orjson.loads(by_kind["out_of_range"].value) == items[1]  # the item as sent
    assert dict(by_kind["unknown_grid"].headers)["pingan-error-field"] == b"grid_id"
    assert orjson.loads(by_kind["bad_json"].value) == "not an object"


async def test_all_invalid_is_422_and_every_item_is_dead_lettered(gateway: Gateway) -> None:
    items = [{**call110(f"bad-{i}", gateway.grids[i], AT), "severity": 0} for i in range(3)]
    response = await gateway.post("call110", {"events": items})
    assert response.status_code == 422, response.text
    body = IngestRejected.model_validate(response.json())
    assert (body.error.code, body.accepted, body.rejected) == ("rejected", 0, 3)
    settings = gateway.settings
    letters = await read_topic(settings, settings.topic_dead_letters, 3, timeout=10)
    assert sorted(orjson.loads(letter.value)["event_id"] for letter in letters) == ["bad-0", "bad-1", "bad-2"]
    assert await read_topic(settings, settings.topic_events, 1, timeout=0.5) == []


# --- back-pressure ------------------------------------------------------------------------------------------


class HeldPublisher:
    """Delivers nothing until released: keeps a request in flight for as long as the test wants."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def deliver(
        self, events: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRecord], *, topic: str | None = None
    ) -> None:
        self.entered.set()
        await self.release.wait()

    async def close(self) -> None:
        pass


async def test_429_with_retry_after_when_the_in_flight_limit_is_reached(settings: Settings, tmp_path: Path) -> None:
    async with running_gateway(settings, tmp_path, ingest_max_in_flight=1) as gateway:
        held = HeldPublisher()

        async def held_gateway(resources: ResourcesDep) -> IngestGateway:
            return dataclasses.replace(resources.ingest, publisher=held)  # same limiter, stub producer

        gateway.app.dependency_overrides[get_ingest] = held_gateway
        first = asyncio.create_task(gateway.post("call110", call110("held", gateway.grids[0], AT)))
        await asyncio.wait_for(held.entered.wait(), 5)

        busy = await gateway.post("call110", call110("next", gateway.grids[1], AT))
        _error(busy, 429, "too_many_requests")
        assert busy.headers["retry-after"] == "1"

        held.release.set()
        assert (await asyncio.wait_for(first, 5)).status_code == 200
        # the slot is free again
        assert (await gateway.post("call110", call110("after", gateway.grids[1], AT))).status_code == 200


async def test_503_with_retry_after_when_the_broker_is_down(settings: Settings, tmp_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    async with running_gateway(settings, tmp_path, kafka_bootstrap=closed) as gateway:
        event = call110("e-1", gateway.grids[0], AT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await gateway.post("call110", event)
        _error(response, 503, "broker_unavailable")
        assert response.headers["retry-after"] == "5"
        # within the cool-down the answer is immediate, without another connection attempt
        again = loop.time()
        _error(await gateway.post("call110", event), 503, "broker_unavailable")
        assert loop.time() - again < 0.5
        assert loop.time() - started < 10
        # keys are still checked first: an unauthenticated caller learns nothing about the broker
        _error(await gateway.post("call110", event, key="wrong"), 401, "invalid_api_key")


# --- camera webhook (vendor shape) ----------------------------------------------------------------------------


async def test_camera_webhook_maps_a_vendor_batch_and_dead_letters_bad_alerts(gateway: Gateway) -> None:
    grid = gateway.grids[3]
    body = {
        "camera_id": "C-7",
        "grid_id": grid,
        "alerts": [
            {"alarm_id": "w1", "type": "打架斗殴", "score": 91, "time": AT.isoformat()},
            {"alarm_id": "w2", "type": "smoke_fire", "confidence": 0.8, "time": AT.isoformat()},
            {"alarm_id": "w3", "type": "no-such-analytic", "time": AT.isoformat()},
        ],
    }
    url = "/v1/webhooks/camera"
    unauthorised = await gateway.client.post(
        url, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    _error(unauthorised, 401, "missing_api_key")
    headers = {"Authorization": f"Bearer {CAMS_KEY}", "Content-Type": "application/json"}
    response = await gateway.client.post(url, content=orjson.dumps(body), headers=headers)
    assert response.status_code == 207, response.text
    answer = IngestResponse.model_validate(response.json())
    assert (answer.accepted, answer.rejected) == (2, 1)
    assert [(r.index, r.status) for r in answer.results] == [(0, "accepted"), (1, "accepted"), (2, "rejected")]
    assert answer.results[2].error is not None and answer.results[2].error.kind == "unknown_category"
    assert response.headers["x-request-id"] == answer.request_id

    settings = gateway.settings
    produced = _by_event_id(await read_topic(settings, settings.topic_events, 1, timeout=10, settle_ms=500))
    partition = partition_for_key(grid.encode(), gateway.settings.topic_partitions)
    assert {record.partition for record, _ in produced.values()} == {partition}
    assert sorted(parse_event(value, now=NOW).type for _, value in produced.values()) == ["fight", "smoke_fire"]
    [dead] = await read_topic(gateway.settings, gateway.settings.topic_dead_letters, 1, timeout=10)
    letter = from_message(dead.value, dead.headers, topic=dead.topic, partition=0, offset=0, timestamp_ms=None)
    assert (letter.kind, letter.source, letter.feed) == ("unknown_category", "webhook", "camera")
    assert letter.origin == f"http:cams/{answer.request_id}#2"
    assert letter.adapter == "pingan.producers.adapters.camera:map_alert"
    assert orjson.loads(letter.raw)["alarm_id"] == "w3"


async def test_one_oversize_item_just_under_the_body_limit_is_rejected_alone_not_503(gateway: Gateway) -> None:
    """issue 8: a body just under 1 MiB that is one oversize item answered 503 broker_unavailable, and a retry
    could never succeed. Now the item is refused (oversize) and its dead letter keeps a truncated copy."""
    item = {**call110("huge", gateway.grids[0], AT), "payload": {"text": "x" * (1024 * 1024 - 4096)}}
    body = orjson.dumps(item)
    assert gateway.settings.ingest_max_body_bytes > len(body) > 1000 * 1024
    response = await gateway.post("call110", body)
    assert response.status_code == 422, response.text
    answer = IngestRejected.model_validate(response.json())
    assert answer.results[0].error is not None and answer.results[0].error.kind == "oversize"
    [dead] = await read_topic(gateway.settings, gateway.settings.topic_dead_letters, 1, timeout=10)
    letter = from_message(dead.value, dead.headers, topic=dead.topic, partition=0, offset=0, timestamp_ms=None)
    assert (letter.kind, letter.raw_size, len(letter.raw)) == ("oversize", len(body), MAX_RAW_BYTES)
    assert letter.raw == body[:MAX_RAW_BYTES] and letter.truncated
    assert letter.origin == f"http:cad/{answer.request_id}#0"
