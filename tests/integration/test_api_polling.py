"""Polling that costs almost nothing when nothing changed, on the real ClickHouse: ETag and 304, ``since``
deltas, gzip once per snapshot, CORS; and the alert stream starting from the newest alerts."""

from __future__ import annotations

from datetime import timedelta

import httpx
import orjson
import pytest

from pingan.api.models import ErrorBody, RiskResponse
from pingan.index.alerts import alert_for
from pingan.settings import Settings
from pingan.store import alerts, risk
from pingan.store.client import connect
from tests.integration.test_api import NOW, _update, running_api

pytestmark = pytest.mark.integration


async def test_etag_304_until_a_change_then_200_and_since_lists_exactly_the_changed_grids(settings: Settings) -> None:
    async with running_api(settings, api_cache_seconds=0) as api:
        first = await api.client.get("/v1/grids/risk")
        assert first.status_code == 200
        tag = first.headers["etag"]
        assert first.headers["cache-control"] == "no-cache"
        version = first.json()["summary"]["version"]
        assert tag.startswith(f'"{version}-')

        unchanged = await api.client.get("/v1/grids/risk", headers={"If-None-Match": tag})
        assert (unchanged.status_code, unchanged.content) == (304, b"")
        assert (unchanged.headers["etag"], unchanged.headers["cache-control"]) == (tag, "no-cache")

        changed_ids = [api.registry.grids[3].grid_id, api.registry.grids[40].grid_id]
        risk.insert(api.writer, [_update(changed_ids[0], 160.0, "red"), _update(changed_ids[1], 60.0, "yellow")])
        after = await api.client.get("/v1/grids/risk", headers={"If-None-Match": tag})
        assert after.status_code == 200
        assert after.headers["etag"] != tag
        new_version = after.json()["summary"]["version"]
        assert new_version > version

        delta = await api.client.get("/v1/grids/risk", params={"since": version})
        body = RiskResponse.model_validate(delta.json())
        assert (body.full, body.since, body.summary.version) == (False, version, new_version)
        assert [(g.grid_id, g.level) for g in body.grids] == [(changed_ids[0], "red"), (changed_ids[1], "yellow")]
        assert body.summary.levels["red"] == 1 and body.summary.grids == len(api.registry.grids)  # the whole map

        nothing = await api.client.get("/v1/grids/risk", params={"since": new_version})
        assert (nothing.json()["full"], nothing.json()["grids"]) == (False, [])
        again = await api.client.get("/v1/grids/risk", params={"since": new_version},
                                     headers={"If-None-Match": nothing.headers["etag"]})  # fmt: skip
        assert again.status_code == 304  # a poller whose `since` is current pays a 304

        unknown = (await api.client.get("/v1/grids/risk", params={"since": 12345})).json()
        assert unknown["full"] is True and len(unknown["grids"]) == len(api.registry.grids)

        refused = await api.client.get("/v1/grids/risk", params={"since": version, "level": "red"})
        assert refused.status_code == 422
        assert ErrorBody.model_validate(refused.json()).field == "since"


async def test_map_bodies_are_gzipped_once_with_their_own_etag_and_others_by_the_middleware(settings: Settings) -> None:
    async with running_api(settings, api_cache_seconds=0) as api:
        plain = await api.client.get("/v1/grids/risk", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        for path in ("/v1/grids/risk", "/v1/grids/risk?format=geojson", "/v1/grids/shapes"):
            packed = await api.client.get(path, headers={"Accept-Encoding": "gzip, br"})
            assert packed.headers["content-encoding"] == "gzip"
            assert packed.headers["vary"] == "Accept-Encoding"
            assert packed.headers["etag"].endswith('+gzip"')
            assert packed.num_bytes_downloaded < len(packed.content) / 4
            revalidated = await api.client.get(path, headers={"Accept-Encoding": "gzip",
                                                              "If-None-Match": packed.headers["etag"]})  # fmt: skip
            assert revalidated.status_code == 304
        assert (await api.client.get("/v1/grids/risk", headers={"Accept-Encoding": "gzip"})).content == plain.content
        listing = await api.client.get("/v1/grids", headers={"Accept-Encoding": "gzip"})
        assert listing.headers["content-encoding"] == "gzip"  # GZipMiddleware


async def test_cors_preflight_and_exposed_etag_for_configured_origins_only(settings: Settings) -> None:
    origins = "http://screen.example, http://10.0.0.5:8080"
    async with running_api(settings, api_cache_seconds=0, cors_origins=origins) as api:
        preflight = await api.client.options("/v1/grids/risk", headers={
            "Origin": "http://screen.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match, authorization"})  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://screen.example"
        assert "if-none-match" in preflight.headers["access-control-allow-headers"].lower()
        polled = await api.client.get("/v1/grids/risk", headers={"Origin": "http://10.0.0.5:8080"})
        assert polled.headers["access-control-allow-origin"] == "http://10.0.0.5:8080"
        assert "etag" in polled.headers["access-control-expose-headers"].lower()
        stranger = await api.client.options("/v1/grids/risk", headers={
            "Origin": "http://elsewhere.example", "Access-Control-Request-Method": "GET"})  # fmt: skip
        assert stranger.status_code == 400
        assert "access-control-allow-origin" not in stranger.headers


def test_alert_stream_can_start_with_the_newest_alerts_then_follows(pipeline_settings: Settings, api: str) -> None:
    writer = connect(pipeline_settings)
    try:
        at = NOW - timedelta(minutes=30)
        made = [alert_for(f"G{i}", "green", "red", 150.0 + i, at, 10 + i, {}, "2026.1") for i in range(5)]
        alerts.insert(writer, [a for a in made if a is not None])
        with httpx.stream("GET", f"{api}/v1/alerts/stream", params={"tail": 2}, timeout=10) as stream:
            seen: list[dict] = []
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    seen.append(orjson.loads(line[len("data: ") :]))
                    if len(seen) == 2:
                        later = alert_for("G9", "yellow", "orange", 120.0, at, 99, {}, "2026.1")
                        assert later is not None
                        alerts.insert(writer, [later])
                if len(seen) == 3:
                    break
    finally:
        writer.close()
    assert [a["grid_id"] for a in seen] == ["G3", "G4", "G9"]  # the newest two, then the new one
