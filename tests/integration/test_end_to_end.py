"""The whole pipeline on real services: events in Kafka -> worker -> ClickHouse -> API."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from pingan.baselines import grid_profiles
from pingan.grids import GridRegistry
from pingan.index.baseline import BaselineModel
from pingan.index.levels import Level
from pingan.index.scoring import assess, load_config
from pingan.settings import Settings
from pingan.store import dead_letters, events
from pingan.store.client import connect
from pingan.topics import ensure_topics
from tests.support.events import app_report, call110, camera, checkpoint
from tests.support.kafka import produce, read_topic
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration


def _scenario(registry: GridRegistry, now: datetime) -> tuple[dict[str, list[dict]], list[bytes]]:
    """Four grids meant to end red, orange, yellow and green, plus one record of each malformed kind."""
    grids = [g.grid_id for g in registry.grids[::97][:4]]
    at = now - timedelta(minutes=2)
    red, orange, yellow, green = grids
    plan = {
        red: [call110(f"red-{i}", red, at + timedelta(seconds=i), "criminal", 4) for i in range(6)],
        orange: [call110(f"orange-{i}", orange, at, "criminal", 4) for i in range(3)]
        + [camera(f"orange-cam-{i}", orange, at) for i in range(4)],
        yellow: [call110("yellow-0", yellow, at, "criminal", 4), app_report("yellow-app", yellow, at, "hazard")],
        green: [checkpoint(f"green-pass-{i}", green, at) for i in range(5)]
        + [call110("green-help", green, at, "help")],
    }
    future = (now + timedelta(days=2)).isoformat()
    malformed = [
        b"\x00\x01 not json",
        orjson.dumps({**call110("bad-src", red, at), "source": "drone"}),
        orjson.dumps({k: v for k, v in call110("bad-missing", red, at).items() if k != "severity"}),
        orjson.dumps({**call110("bad-range", red, at), "grid_id": None, "location": {"lon": 250.0, "lat": 31.0}}),
        orjson.dumps({**call110("bad-future", red, at), "event_time": future}),
        orjson.dumps({**call110("bad-big", red, at), "payload": {"incident_id": "x" * 70_000}}),
    ]
    return plan, malformed


def _expected_levels(plan: dict[str, list[dict]], settings: Settings, registry: GridRegistry) -> dict[str, str]:
    """The levels the pure index gives, against the baseline a worker has before any learning: the priors,
    flat over the week, so one hour expects exactly the hourly prior whatever the time."""
    index = load_config(settings.risk_config_path)
    baseline = BaselineModel(index.baseline, grid_profiles(registry))
    one_hour = range(0, 3600, 300)
    levels = {}
    for grid_id, documents in plan.items():
        counts = Counter((d["source"], d["type"], d["severity"]) for d in documents)
        expectations = {
            source: (baseline.expected(grid_id, source, one_hour, 300), baseline.unit_weight(source))
            for source, _, _ in counts
        }
        levels[grid_id] = assess(counts, index, expectations).level.value
    return levels


async def test_known_events_reach_the_map_clickhouse_and_history(pipeline_settings: Settings, worker, api) -> None:
    settings = pipeline_settings
    registry = GridRegistry.load(settings.grid_registry_path)
    now = datetime.now(UTC)
    plan, malformed = _scenario(registry, now)
    expected = _expected_levels(plan, settings, registry)
    # the scenario exercises all four colours; if the config changes so that it no longer does, say so here
    assert sorted(expected.values(), key=lambda v: Level(v).rank) == ["green", "yellow", "orange", "red"]

    await ensure_topics(settings)
    messages = [(g.encode(), orjson.dumps(d)) for g, docs in plan.items() for d in docs]
    messages += [(None, raw) for raw in malformed]
    await produce(settings, settings.topic_events, messages)
    valid = sum(len(docs) for docs in plan.values())

    def map_shows_expected() -> dict | None:
        assert worker.alive, worker.log_tail()
        body = httpx.get(f"{api}/v1/grids/risk", timeout=5).json()
        by_id = {g["grid_id"]: g for g in body["grids"]}
        return body if all(by_id[g]["level"] == level for g, level in expected.items()) else None

    body = wait_for(map_shows_expected, timeout=60, what=f"levels {expected} on /v1/grids/risk", interval=0.5)
    assert len(body["grids"]) == len(registry.grids) >= 900
    others = [g for g in body["grids"] if g["grid_id"] not in expected]
    assert {g["level"] for g in others} == {"green"}

    executor = connect(settings)
    try:
        assert wait_for(lambda: events.count_distinct(executor) == valid, timeout=20, what="all events stored")
        kinds = wait_for(
            lambda: (k := dead_letters.count_by_kind(executor)) and sum(k.values()) == len(malformed) and k,
            timeout=20,
            what="all dead letters stored",
        )
    finally:
        executor.close()
    assert kinds == {
        "bad_json": 1, "unknown_source": 1, "missing_field": 1, "out_of_range": 1, "future_timestamp": 1, "oversize": 1,
    }  # fmt: skip

    red = next(g for g, level in expected.items() if level == "red")
    start = (now - timedelta(hours=1)).isoformat()
    end = (now + timedelta(minutes=10)).isoformat()
    history = httpx.get(f"{api}/v1/grids/{red}/history", params={"start": start, "end": end, "step": 300}).json()
    windows = history["windows"]
    assert sum(w["events"] for w in windows) == len(plan[red])
    assert "red" in {w["level"] for w in windows}

    # escalations of the orange and red grids are alerts: by cursor poll, and as Server-Sent Events
    alerted = {g for g, level in expected.items() if level in ("orange", "red")}
    page = wait_for(
        lambda: (
            (p := httpx.get(f"{api}/v1/alerts", timeout=5).json())
            and {a["grid_id"] for a in p["alerts"]} >= alerted
            and p
        ),
        timeout=20,
        what="alerts for the orange and red grids",
    )
    mine = [a for a in page["alerts"] if a["grid_id"] in alerted]
    # Risk is decided at each 10 s step of event time: a burst that spans a step boundary escalates in two
    # alerts (orange, then red); the last one is the grid's level, and nothing steps down.
    assert {a["kind"] for a in mine} == {"escalation"}
    last = {a["grid_id"]: a["level"] for a in sorted(mine, key=lambda a: a["as_of"])}
    assert last == {g: expected[g] for g in alerted}
    assert all(a["explanation"]["top_types"][0]["type"] == "call110/criminal" for a in mine)
    newer = httpx.get(f"{api}/v1/alerts", params={"after": page["next_cursor"]}, timeout=5).json()
    assert newer["alerts"] == []
    with httpx.stream("GET", f"{api}/v1/alerts/stream", timeout=10) as stream:
        streamed = []
        for line in stream.iter_lines():
            if line.startswith("data: "):
                streamed.append(orjson.loads(line[len("data: ") :]))
            if len(streamed) == len(page["alerts"]):
                break
    assert [a["alert_id"] for a in streamed] == [a["alert_id"] for a in page["alerts"]]

    letters = await read_topic(settings, settings.topic_dead_letters, len(malformed))
    assert sorted(r.value for r in letters) == sorted(malformed)  # the original bytes, untouched
    reasons = {dict(r.headers)["pingan-error-kind"].decode() for r in letters}
    assert reasons == set(kinds)
    assert worker.alive
