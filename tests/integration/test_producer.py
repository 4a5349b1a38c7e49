"""The shared producer against the real broker: topics, keys, partitions, and the simulation runner."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pingan.clock import FixedClock
from pingan.errors import ConfigError, ServiceError
from pingan.grids import GridRegistry
from pingan.partitioning import partition_for_key
from pingan.producers.kafka import EventProducer
from pingan.producers.simulator import CitySimulator, run_simulation
from pingan.schemas.batch import is_batch, split_batch
from pingan.schemas.envelope import parse_event
from pingan.settings import Settings
from pingan.topics import ensure_topics, topic_names
from tests.support.defaults import default_settings
from tests.support.kafka import read_envelopes, read_topic

pytestmark = pytest.mark.integration

PEAK = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # 19:00 China time


def _key(settings: Settings) -> bytes:
    return settings.pseudonym_key.get_secret_value().encode()


async def test_topics_are_created_once_with_the_configured_partitions(settings: Settings) -> None:
    await ensure_topics(settings)
    await ensure_topics(settings)  # already there: fine
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics(list(topic_names(settings)))}
        assert set(described) == set(topic_names(settings))
        for description in described.values():
            assert description["error_code"] == 0
            assert len(description["partitions"]) == settings.topic_partitions
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic_risk)])
        [resource] = response.resources
        configs = {entry[0]: entry[1] for entry in resource[4]}
        # Tansu stores and reports it (its memory storage does not compact yet); Kafka applies it.
        assert configs.get("cleanup.policy") == "compact"
    finally:
        await admin.close()
    other = settings.model_copy(update={"topic_partitions": settings.topic_partitions + 1})
    with pytest.raises(ConfigError, match="partitions"):
        await ensure_topics(other)


async def test_events_arrive_keyed_by_grid_on_the_grids_partition(settings: Settings, registry: GridRegistry) -> None:
    simulator = CitySimulator(registry, seed=5, pseudonym_key=_key(settings), nonce="it")
    events = simulator.events_between(PEAK, PEAK + timedelta(minutes=3))
    assert len(events) > 500
    located = dict(events[0], event_id="located-only", grid_id=None)  # the producer must locate it
    del located["grid_id"]
    outside = dict(events[1], event_id="outside", location={"lon": 116.4, "lat": 39.9})
    del outside["grid_id"]
    await ensure_topics(settings)
    async with EventProducer(settings, registry) as producer:
        started = time.perf_counter()
        assert await producer.send_many(events) == len(events)
        elapsed = time.perf_counter() - started
        single = await producer.send(located)
        await producer.send(outside)
        assert producer.sent == len(events) + 2
    print(f"send_many: {len(events)} events in {elapsed:.3f}s ({len(events) / elapsed:,.0f}/s)")
    assert single.partition == partition_for_key(events[0]["grid_id"].encode(), settings.topic_partitions)

    # The simulator's events go as event batch records, one partition's grids each; the two sent alone as
    # plain records keyed by grid (or by nothing, outside every grid: the worker dead-letters it).
    records = await read_topic(settings, settings.topic_events, 2, timeout=60, settle_ms=1000)
    by_id = {}
    for record in records:
        envelopes = split_batch(record.value) if is_batch(record.value) else [record.value]
        for value in envelopes:
            by_id[orjson.loads(value)["event_id"]] = (record, value)
    assert sum(is_batch(r.value) for r in records) >= settings.topic_partitions and len(records) < len(events) / 50
    assert set(by_id) == {e["event_id"] for e in events} | {"located-only", "outside"}
    partitions_of_grid: dict[str, set[int]] = defaultdict(set)
    for event in events:
        record, value = by_id[event["event_id"]]
        assert record.partition == partition_for_key(event["grid_id"].encode(), settings.topic_partitions)
        partitions_of_grid[event["grid_id"]].add(record.partition)
        assert orjson.loads(value) == event
        parse_event(value, now=PEAK + timedelta(hours=1))
    assert all(len(partitions) == 1 for partitions in partitions_of_grid.values())
    assert len({p for ps in partitions_of_grid.values() for p in ps}) == settings.topic_partitions
    assert by_id["located-only"][0].key == events[0]["grid_id"].encode()
    assert by_id["outside"][0].key is None  # the worker dead-letters it as outside_grids
    # the order of a grid's events is kept across and within records
    order = sorted(by_id.values(), key=lambda item: (item[0].partition, item[0].offset))
    seen = [orjson.loads(v)["event_id"] for _, v in order]
    for grid in partitions_of_grid:
        sent = [e["event_id"] for e in events if e["grid_id"] == grid]
        assert [i for i in seen if i in set(sent)] == sent


async def test_run_simulation_sends_exactly_what_the_simulator_generates(
    settings: Settings, registry: GridRegistry
) -> None:
    clock = FixedClock(PEAK)
    runner = asyncio.create_task(
        run_simulation(
            settings, registry, clock=clock, rate=1.0, duration_s=120, bursts=False, tick_s=0.01, seed=3, nonce="run"
        )
    )
    deadline = time.monotonic() + 60
    while not runner.done() and time.monotonic() < deadline:
        clock.advance(7.5)  # simulated seconds per real poll: 2 simulated minutes in ~16 polls
        await asyncio.sleep(0.02)
    report = await asyncio.wait_for(runner, timeout=30)
    assert report.ended is not None and report.ended - report.started == timedelta(seconds=120)
    expected = CitySimulator(registry, seed=3, pseudonym_key=_key(settings), nonce="run").events_between(
        report.started, report.ended
    )
    assert report.sent == len(expected) > 100
    assert sum(report.by_source.values()) == report.sent
    envelopes = await read_envelopes(settings, settings.topic_events, len(expected), timeout=60)
    assert sorted(orjson.loads(e)["event_id"] for e in envelopes) == sorted(e["event_id"] for e in expected)


async def test_stop_event_ends_a_run_and_flushes(settings: Settings, registry: GridRegistry) -> None:
    clock = FixedClock(PEAK)
    stop = asyncio.Event()
    runner = asyncio.create_task(
        run_simulation(settings, registry, clock=clock, bursts=True, stop_event=stop, tick_s=0.05, nonce="stop")
    )
    await asyncio.sleep(0.2)
    clock.advance(60)
    stop.set()
    report = await asyncio.wait_for(runner, timeout=30)
    assert report.started == PEAK and report.ended == PEAK + timedelta(seconds=60)
    assert report.bursts == 5 and report.sent > 0
    assert report.by_source["call110"] >= 3  # the demo bursts' first minute is in there
    assert len(await read_envelopes(settings, settings.topic_events, report.sent, timeout=60)) == report.sent


async def test_an_unreachable_broker_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    settings = default_settings(kafka_bootstrap=f"127.0.0.1:{port}", topic_prefix="unreachable.")
    with pytest.raises(ServiceError, match="cannot connect a producer"):
        async with EventProducer(settings):
            pass
    with pytest.raises(ServiceError, match="cannot manage topics"):
        await ensure_topics(settings)


async def test_sending_before_start_is_refused() -> None:
    producer = EventProducer(default_settings())
    with pytest.raises(ServiceError, match="not started"):
        await producer.send({"event_id": "x"})
