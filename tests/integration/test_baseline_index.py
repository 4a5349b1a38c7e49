"""Baseline-aware index end to end: a busy grid at its normal rate stays green, while a quiet grid with a
burst of the same absolute size turns orange or red (Kafka -> Faust worker -> ClickHouse -> API).

The busy grid's normal comes from its own history in ClickHouse, learned by `pingan baselines learn` before
the worker starts; the quiet grid has no history and falls back to its type/population prior.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from pingan.grids import GridRegistry
from pingan.schemas.envelope import parse_event
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from tests.support.events import call110
from tests.support.kafka import produce
from tests.support.processes import ChildProcess, run_cli, wait_for

pytestmark = pytest.mark.integration

# An ordinary hour at the railway station: eight calls, 12.4 weighted (criminal 3.0, public order 2.0,
# dispute 0.75, traffic 0.45 at these severities, twice).
HOURLY_CALLS = [("criminal", 3), ("public_order", 3), ("dispute", 2), ("traffic", 2)] * 2
HISTORY_WEEKS = 2


def _pick_grids(registry: GridRegistry) -> tuple[str, str]:
    busy = next(g.grid_id for g in registry.grids if g.grid_type == "transport_hub")
    quiet = next(g.grid_id for g in registry.grids if g.grid_type == "urban" and busy not in g.neighbours)
    return busy, quiet


@pytest.fixture
def learned(pipeline_settings: Settings) -> Iterator[str]:
    """Two weeks of the busy grid's ordinary hours in ClickHouse, and a baseline learned from them."""
    settings = pipeline_settings
    busy, _ = _pick_grids(GridRegistry.load(settings.grid_registry_path))
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    rows = []
    for hour in range(HISTORY_WEEKS * 168):
        start = end - timedelta(hours=hour + 1)
        for i, (category, severity) in enumerate(HOURLY_CALLS):
            document = call110(f"hist-{hour}-{i}", busy, start + timedelta(minutes=7 * i + 1), category, severity)
            event = parse_event(orjson.dumps(document), now=now)
            rows.append(events.row(event, partition=0, offset=len(rows), late=False, ingested_at=now))
    prepare_database(settings)
    executor = connect(settings)
    try:
        events.insert(executor, rows)
    finally:
        executor.close()
    done = run_cli(settings, "baselines", "learn", "--weeks", str(HISTORY_WEEKS))
    assert re.search(rf"call110\s+{len(rows)} events", done.stdout), done.stdout
    version = done.stdout.split()[1].rstrip(":")
    listed = run_cli(settings, "baselines", "list").stdout
    assert listed.startswith(version), listed
    return version


@pytest.fixture
def worker(learned: str, worker: ChildProcess) -> ChildProcess:
    """The shared worker fixture, started only after the baseline exists (it is loaded at start-up)."""
    return worker


async def test_a_busy_grid_at_its_normal_rate_stays_green_while_a_quiet_grid_with_the_same_burst_turns_red(
    pipeline_settings: Settings, learned: str, worker: ChildProcess, api: str
) -> None:
    settings = pipeline_settings
    registry = GridRegistry.load(settings.grid_registry_path)
    busy, quiet = _pick_grids(registry)
    at = datetime.now(UTC) - timedelta(minutes=3)
    burst = {
        grid_id: [
            call110(f"now-{grid_id}-{i}", grid_id, at + timedelta(seconds=10 * i), category, severity)
            for i, (category, severity) in enumerate(HOURLY_CALLS)
        ]
        for grid_id in (busy, quiet)
    }
    await ensure_topics(settings)
    messages = [(grid_id.encode(), orjson.dumps(d)) for grid_id, documents in burst.items() for d in documents]
    await produce(settings, settings.topic_events, messages)

    def both_assessed() -> dict[str, dict] | None:
        assert worker.alive, worker.log_tail()
        details = {g: httpx.get(f"{api}/v1/grids/{g}", timeout=5).json() for g in (busy, quiet)}
        done = all(d["explanation"] and d["risk"]["window_events"] == len(HOURLY_CALLS) for d in details.values())
        return details if done else None

    details = wait_for(both_assessed, timeout=60, what="both grids assessed with all eight calls", interval=0.5)
    busy_risk, quiet_risk = details[busy]["risk"], details[quiet]["risk"]
    assert busy_risk["level"] == "green", details[busy]
    assert quiet_risk["level"] in ("orange", "red"), details[quiet]

    # Observed vs expected explains the difference: the same 12.4 weighted, normal here, unheard-of there.
    [busy_source] = details[busy]["explanation"]["sources"]
    [quiet_source] = details[quiet]["explanation"]["sources"]
    assert busy_source["observed"] == quiet_source["observed"] == pytest.approx(12.4)
    assert busy_source["volume_index"] == quiet_source["volume_index"] >= 100
    assert busy_source["expected"] > 5 > 0.5 > quiet_source["expected"]
    assert busy_source["surprise"] < 2 < 8 < quiet_source["surprise"]
    assert details[busy]["explanation"]["baseline_version"] == learned
    assert details[quiet]["explanation"]["config_version"] == quiet_risk["config_version"]

    # The baseline endpoint shows the same expectation, hour by hour (the busy grid's history is the same
    # every hour, so every hour of the week expects what the window did).
    for grid_id, source in ((busy, busy_source), (quiet, quiet_source)):
        baseline = httpx.get(f"{api}/v1/grids/{grid_id}/baseline", timeout=5).json()
        assert baseline["baseline_version"] == learned
        [calls] = [s for s in baseline["sources"] if s["source"] == "call110"]
        assert calls["expected_per_hour"] == pytest.approx([source["expected"]] * 168, abs=0.001)
