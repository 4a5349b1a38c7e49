"""``/metrics`` on the real services, parsed with prometheus-client's own parser."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pingan.index.alerts import alert_for
from pingan.settings import Settings
from pingan.store import alerts, dead_letters, events, risk
from pingan.topics import ensure_topics
from tests.integration.test_api import NOW, _update, running_api

pytestmark = pytest.mark.integration


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _event_row(event_id: str, grid_id: str, source: str) -> tuple:
    at = int((NOW - timedelta(minutes=3)).timestamp())
    return (event_id, source, f"{source}/x", 3, at, 0, at, grid_id, None, None, "d1", 1, "{}", 0, 0, 1,
            int(NOW.timestamp()) - 60)  # fmt: skip


async def test_metrics_parse_and_report_latency_snapshot_lag_events_dead_letters_and_alerts(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    async with running_api(settings, api_cache_seconds=0) as api:
        grid = api.registry.grids[0].grid_id
        risk.insert(api.writer, [_update(grid, 170.0, "red")])
        events.insert(api.writer, [_event_row(f"e{i}", grid, "call110") for i in range(30)]
                      + [_event_row("c1", grid, "camera")])  # fmt: skip
        dead_letters.insert(
            api.writer,
            [
                dead_letters.row(
                    dead_letters.DeadLetter("t.events", 0, 1, NOW, "bad_json", "", "not JSON", b"{"), ingested_at=NOW
                )
            ],
        )
        alert = alert_for(grid, "green", "red", 170.0, NOW, 1, {}, "2026.1")
        assert alert is not None
        alerts.insert(api.writer, [alert])
        for _ in range(3):
            assert (await api.client.get("/v1/grids/risk")).status_code == 200
        assert (await api.client.get(f"/v1/grids/{grid}")).status_code == 200
        assert (await api.client.get("/nowhere")).status_code == 404

        response = await api.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = _samples(response.text)

    counts = {(labels["route"], labels["status"]): value
              for labels, value in samples["pingan_api_request_duration_seconds_count"]}  # fmt: skip
    assert counts[("/v1/grids/risk", "200")] == 3
    assert counts[("/v1/grids/{grid_id}", "200")] == 1  # the template, not the grid's path
    assert counts[("unmatched", "404")] == 1
    ((_, age),) = samples["pingan_map_snapshot_age_seconds"]
    assert 0 <= age < 60
    grids = {labels["level"]: value for labels, value in samples["pingan_map_grids"]}
    assert grids["red"] == 1 and grids["green"] == len(api.registry.grids) - 1
    lag = {labels["partition"]: value for labels, value in samples["pingan_worker_lag_events"]}
    assert lag == {str(p): 0 for p in range(settings.topic_partitions)}
    rates = {labels["source"]: value for labels, value in samples["pingan_events_stored_per_second"]}
    assert rates == {"call110": 30 / 300, "camera": 1 / 300}
    assert samples["pingan_dead_letters"] == [({"kind": "bad_json"}, 1.0)]
    assert samples["pingan_alerts"] == [({"level": "red", "kind": "escalation"}, 1.0)]
    up = {labels["source"]: value for labels, value in samples["pingan_metrics_source_up"]}
    assert up == {"broker": 1.0, "clickhouse": 1.0}
