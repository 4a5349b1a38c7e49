"""The simulated city: deterministic, valid, realistic rates and mixes, bursts that colour the map."""

from __future__ import annotations

import random
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan.grids import GridRegistry
from pingan.index.levels import Level
from pingan.index.scoring import assess
from pingan.producers.simulator import (
    DAILY_EVENTS,
    SOURCES,
    CitySimulator,
    demo_bursts,
    diurnal,
    poisson,
)
from pingan.schemas.envelope import parse_event
from pingan.schemas.payloads import PSEUDONYM_PATTERN
from tests.support.defaults import shipped_index

KEY = b"unit-test-key"
# 2026-11-23 19:00 China time, the evening peak.
PEAK = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)


def _sim(registry: GridRegistry, seed: int = 1, **kwargs: object) -> CitySimulator:
    return CitySimulator(registry, seed=seed, pseudonym_key=KEY, **kwargs)  # type: ignore[arg-type]


def test_same_seed_same_events_different_seed_different(registry: GridRegistry) -> None:
    start, end = PEAK, PEAK + timedelta(minutes=5)
    first = _sim(registry).events_between(start, end)
    assert first == _sim(registry).events_between(start, end)
    assert orjson.dumps(first) == orjson.dumps(_sim(registry).events_between(start, end))
    assert first != _sim(registry, seed=2).events_between(start, end)
    assert {e["event_id"] for e in first}.isdisjoint(
        e["event_id"] for e in _sim(registry, nonce="other").events_between(start, end)
    )


def test_slicing_a_run_into_ticks_does_not_change_it(registry: GridRegistry) -> None:
    sim = _sim(registry)
    sim.inject_burst(registry.grids[0].grid_id, PEAK + timedelta(seconds=30), 200, 12)
    whole = sim.events_between(PEAK, PEAK + timedelta(minutes=4))
    ticks, moment = [], PEAK
    rng = random.Random(0)
    while moment < PEAK + timedelta(minutes=4):
        step = min(timedelta(milliseconds=rng.randint(1, 20_000)), PEAK + timedelta(minutes=4) - moment)
        ticks.extend(sim.events_between(moment, moment + step))
        moment += step
    assert ticks == whole
    assert len({e["event_id"] for e in whole}) == len(whole)


def test_interval_is_open_at_the_start_and_closed_at_the_end(registry: GridRegistry) -> None:
    sim = _sim(registry)
    end = PEAK + timedelta(minutes=2)
    events = sim.events_between(PEAK, end)
    edge = datetime.fromisoformat(events[10]["event_time"])  # exactly the time of an event
    before, after = sim.events_between(PEAK, edge), sim.events_between(edge, end)
    assert before + after == events
    assert before[-1]["event_time"] == events[10]["event_time"]
    assert all(datetime.fromisoformat(e["event_time"]) > edge for e in after)
    assert sim.events_between(edge, edge) == [] and sim.events_between(edge, PEAK) == []
    with pytest.raises(ValueError, match="tz-aware"):
        sim.events_between(datetime(2026, 1, 1), datetime(2026, 1, 2))


def test_every_event_is_valid_and_placed_in_its_grid(registry: GridRegistry) -> None:
    sim = _sim(registry)
    for burst in demo_bursts(registry, PEAK):
        sim.add_burst(burst)
    start, end = PEAK, PEAK + timedelta(minutes=10)
    events = sim.events_between(start, end)
    assert {e["source"] for e in events} == set(SOURCES)
    times = [e["event_time"] for e in events]
    assert times == sorted(times)
    for raw in events:
        event = parse_event(orjson.dumps(raw), now=end)
        assert start < event.event_time <= end
        assert raw["grid_id"] and registry.locate(event.lon, event.lat).grid_id == raw["grid_id"]  # type: ignore[union-attr,arg-type]
        assert event.event_id.startswith("sim-s1-")
    text = orjson.dumps(events).decode()
    assert "川" not in text  # plates never leave the producer raw
    plates = [e["payload"]["plate_hash"] for e in events if "plate_hash" in e["payload"]]
    reporters = [e["payload"]["reporter_id"] for e in events if "reporter_id" in e["payload"]]
    assert plates and reporters
    assert all(re.fullmatch(PSEUDONYM_PATTERN, value) for value in plates + reporters)


def test_returned_events_are_copies(registry: GridRegistry) -> None:
    sim = _sim(registry)
    first = sim.events_between(PEAK, PEAK + timedelta(seconds=30))
    first[0]["payload"]["tampered"] = True
    first[0]["location"]["lon"] = 0.0
    assert sim.events_between(PEAK, PEAK + timedelta(seconds=30))[0] != first[0]


def test_daily_volumes_match_the_configured_rates(registry: GridRegistry) -> None:
    rate = 0.05  # a day at 5% keeps the test fast; counts scale linearly
    sim = _sim(registry, rate=rate)
    day = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)  # local midnight to midnight
    counts = Counter(e["source"] for e in sim.events_between(day, day + timedelta(days=1)))
    for source in SOURCES:
        expected = DAILY_EVENTS[source] * rate
        assert abs(counts[source] - expected) < 5 * expected**0.5 + 1, (source, counts[source], expected)
    assert sim.mean_rate("camera") == pytest.approx(3.0 * rate)
    assert 2 < sum(_sim(registry).mean_rate(s) for s in SOURCES) < 10  # several events/s district-wide


def test_rate_scales_volumes(registry: GridRegistry) -> None:
    window = (PEAK, PEAK + timedelta(minutes=10))
    single = len(_sim(registry).events_between(*window))
    double = len(_sim(registry, rate=2.0).events_between(*window))
    assert 1.8 < double / single < 2.2
    assert _sim(registry, rate=0.0).events_between(*window) == []
    with pytest.raises(ValueError, match="rate"):
        _sim(registry, rate=-1.0)


def test_diurnal_cycle_quiet_at_night_peaking_in_the_evening(registry: GridRegistry) -> None:
    for source in SOURCES:
        hours = [diurnal(source, int((PEAK + timedelta(hours=h)).timestamp() * 1000)) for h in range(24)]
        assert statistics.fmean(hours) == pytest.approx(1.0, rel=0.02)
    night = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # 03:00 China time
    sim = _sim(registry)
    quiet = Counter(e["source"] for e in sim.events_between(night, night + timedelta(minutes=30)))
    busy = Counter(e["source"] for e in sim.events_between(PEAK, PEAK + timedelta(minutes=30)))
    assert busy["camera"] > 4 * quiet["camera"]
    assert busy["call110"] > 2 * quiet["call110"]


def test_110_category_mix(registry: GridRegistry) -> None:
    sim = _sim(registry, daily={"call110": 100_000, "camera": 0, "checkpoint": 0, "app_report": 0})
    events = sim.events_between(PEAK, PEAK + timedelta(hours=1))
    assert len(events) > 3000 and {e["source"] for e in events} == {"call110"}
    share = Counter(e["type"] for e in events)
    total = len(events)
    assert 0.07 < (share["criminal"] + share["public_order"]) / total < 0.16  # ~10% crime and public order
    assert 0.24 < (share["help"] + share["non_police"]) / total < 0.36  # ~30% help / diverted
    assert all(e["severity"] == 1 for e in events if e["type"] == "non_police")
    assert all("dispatched_at" not in e["payload"] for e in events if e["type"] == "non_police")
    assert all(e["payload"]["priority"] == 1 for e in events if e["severity"] >= 4)


def test_busy_grids_are_busier(registry: GridRegistry) -> None:
    sim = _sim(registry)
    calls = sim.grid_share("call110")
    assert sum(calls.values()) == pytest.approx(1.0)
    by_type: dict[str, list[float]] = defaultdict(list)
    for grid in registry.grids:
        by_type[grid.grid_type].append(calls.get(grid.grid_id, 0.0))
    urban = statistics.median(by_type["urban"])
    assert min(by_type["transport_hub"]) > 5 * urban
    assert statistics.median(by_type["commercial"]) > 2 * urban
    cameras = sim.grid_share("camera")
    assert statistics.median(
        cameras[g.grid_id] for g in registry.grids if g.grid_type == "rural"
    ) < 0.5 * statistics.median(cameras[g.grid_id] for g in registry.grids if g.grid_type == "urban")
    checkpoints = sim.grid_share("checkpoint")
    assert 10 <= len(checkpoints) < 40  # fixed checkpoints in a few grids, not everywhere


def test_background_keeps_most_grids_green_at_the_evening_peak(registry: GridRegistry) -> None:
    config = shipped_index()
    counts: dict[str, Counter[tuple[str, str, int]]] = defaultdict(Counter)
    for event in _sim(registry).events_between(PEAK, PEAK + timedelta(hours=1)):
        counts[event["grid_id"]][(event["source"], event["type"], event["severity"])] += 1
    levels = Counter(assess(counts[grid.grid_id], config).level for grid in registry.grids)
    assert levels[Level.GREEN] >= 0.85 * len(registry.grids), levels
    assert levels[Level.RED] <= 5, levels


def test_demo_bursts_colour_their_grids_within_a_minute(registry: GridRegistry) -> None:
    config = shipped_index()
    for round_ in range(3):
        sim = _sim(registry, seed=round_, daily=dict.fromkeys(SOURCES, 0.0))  # bursts only
        start = PEAK + timedelta(minutes=7 * round_)
        bursts = demo_bursts(registry, start, round_=round_)
        for burst in bursts:
            sim.add_burst(burst)
        grids = {burst.grid_id for burst in bursts}
        assert len(grids) == 4
        types = {registry.get(g).grid_type for g in grids}  # type: ignore[union-attr]
        assert types == {"urban", "school_zone", "commercial", "transport_hub"}
        levels = {}
        for minutes in (1, 30):
            counts: dict[str, Counter[tuple[str, str, int]]] = defaultdict(Counter)
            for event in sim.events_between(start - timedelta(seconds=1), start + timedelta(minutes=minutes)):
                counts[event["grid_id"]][(event["source"], event["type"], event["severity"])] += 1
            levels[minutes] = {grid: assess(counts[grid], config).level for grid in grids}
        assert all(level != Level.GREEN for level in levels[1].values()), levels
        assert set(levels[30].values()) >= {Level.YELLOW, Level.ORANGE, Level.RED}, levels


def test_inject_burst(registry: GridRegistry) -> None:
    sim = _sim(registry, daily=dict.fromkeys(SOURCES, 0.0))
    grid = registry.grids[100]
    burst = sim.inject_burst(grid.grid_id, PEAK, 600, 30, source="camera", types=["fight"], severity=5)
    assert sim.bursts == (burst,)
    assert sim.events_between(PEAK - timedelta(hours=1), PEAK - timedelta(seconds=1)) == []
    events = sim.events_between(PEAK - timedelta(seconds=1), PEAK + timedelta(minutes=10))
    assert len(events) == 30
    assert {(e["grid_id"], e["source"], e["type"], e["severity"]) for e in events} == {
        (grid.grid_id, "camera", "fight", 5)
    }
    early = sim.events_between(PEAK - timedelta(seconds=1), PEAK + timedelta(minutes=2))
    assert len(early) > 30 * 0.4  # front-loaded: over 40% in the first fifth of the duration
    sim.inject_burst(grid.grid_id, PEAK, 60, 3, source="checkpoint")
    flagged = [
        e
        for e in sim.events_between(PEAK - timedelta(seconds=1), PEAK + timedelta(minutes=1))
        if e["source"] == "checkpoint"
    ]
    assert len(flagged) == 3 and all(e["payload"]["flagged"] for e in flagged)
    assert registry.locate(flagged[0]["location"]["lon"], flagged[0]["location"]["lat"]) is grid


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid_id": "nope"}, "not in the registry"),
        ({"source": "radio"}, "source"),
        ({"types": ["fight"]}, "not call110 types"),
        ({"count": 0}, "count"),
        ({"severity": 9}, "severity"),
    ],
)
def test_bad_bursts_are_refused(registry: GridRegistry, kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"grid_id": registry.grids[0].grid_id, "start": PEAK, "duration_s": 60, "count": 3}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        _sim(registry).inject_burst(**arguments)  # type: ignore[arg-type]


def test_constructor_checks(registry: GridRegistry) -> None:
    with pytest.raises(ValueError, match="nonce"):
        _sim(registry, nonce="has space")
    with pytest.raises(ValueError, match="key is required"):
        CitySimulator(registry, seed=1, pseudonym_key=b"")
    with pytest.raises(ValueError, match="unknown sources"):
        _sim(registry, daily={"radio": 1.0})


@pytest.mark.parametrize("lam", [0.3, 4.0, 25.0, 400.0])
def test_poisson_mean_and_variance(lam: float) -> None:
    rng = random.Random(11)
    draws = [poisson(lam, rng) for _ in range(20_000)]
    assert statistics.fmean(draws) == pytest.approx(lam, rel=0.03, abs=0.02)
    assert statistics.pvariance(draws) == pytest.approx(lam, rel=0.06, abs=0.03)
    assert min(draws) >= 0
    assert poisson(0.0, rng) == 0
