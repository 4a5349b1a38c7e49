"""Incidents through the API on the real ClickHouse and broker (in-process ASGI, a clock the test moves):
scopes, the lifecycle with its times, escalation of an incident nobody acknowledges, concurrent actions,
idempotent retries, the alert-actions topic, and the handling figures next to the published index."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from pingan.api.app import create_app
from pingan.api.ingest_auth import hash_key
from pingan.clock import FixedClock
from pingan.grids import GridRegistry
from pingan.index.alerts import alert_for
from pingan.index.published import load_config
from pingan.publishing import publish
from pingan.settings import Settings
from pingan.store import alert_actions, alerts
from pingan.store.client import Executor, connect
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration

OPENED = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
KEYS = {
    "community": ("PA01-C01", "k-community"),
    "neighbour": ("PA01-C02", "k-neighbour"),
    "subdistrict": ("PA01", "k-subdistrict"),
    "district": ("PA", "k-district"),
}


def keys_file(tmp_path: Path) -> Path:
    """An operator key per centre of the demo district, and an unscoped dashboard key."""
    path = tmp_path / "keys.toml"
    tables = [
        f'[[client]]\nname = "{name}"\nrole = "operator"\nscope = "{scope}"\nkey_sha256 = ["{hash_key(key)}"]\n'
        for name, (scope, key) in KEYS.items()
    ]
    tables.append(f'[[client]]\nname = "screen"\nrole = "dashboard"\nkey_sha256 = ["{hash_key("k-screen")}"]\n')
    path.write_text("\n".join(tables), encoding="utf-8")
    return path


def as_(centre: str) -> dict[str, str]:
    key = "k-screen" if centre == "screen" else KEYS[centre][1]
    return {"Authorization": f"Bearer {key}"}


@functools.cache
def _registry(path: Path) -> GridRegistry:
    return GridRegistry.load(path)


@dataclass
class Desk:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FixedClock
    writer: Executor
    registry: GridRegistry
    settings: Settings

    def grid_of(self, community: str) -> str:
        return next(g.grid_id for g in self.registry.grids if g.community_id == community)

    def red_alert(self, grid_id: str, at: datetime, version: int) -> str:
        alert = alert_for(grid_id, "yellow", "red", 160.0, at, version, {"dominant": "call110"}, "t")
        assert alert is not None
        assert not alerts.insert(self.writer, [alert])
        return alert.alert_id

    async def act(self, centre: str, alert_id: str, kind: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            f"/v1/alerts/{alert_id}/actions", headers=as_(centre), json={"kind": kind, **body}
        )


@asynccontextmanager
async def running_desk(settings: Settings, tmp_path: Path) -> AsyncIterator[Desk]:
    settings = settings.model_copy(
        update={
            "api_cache_seconds": 0,
            "api_open_read": False,
            "ingest_keys_path": keys_file(tmp_path),
            "incident_red_ack_seconds": 300.0,
        }
    )
    registry = _registry(settings.grid_registry_path)
    clock = FixedClock(OPENED)
    app = create_app(settings, registry=registry, clock=clock)
    async with app.router.lifespan_context(app):
        writer = connect(settings)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield Desk(app, client, clock, writer, registry, settings)
        finally:
            writer.close()


@pytest.fixture
async def desk(settings: Settings, tmp_path: Path) -> AsyncIterator[Desk]:
    async with running_desk(settings, tmp_path) as running:
        yield running


async def test_scopes_lifecycle_and_times(desk: Desk) -> None:
    grid = desk.grid_of("PA01-C01")
    alert_id = desk.red_alert(grid, OPENED, 1_000)

    # the community sees its incident, the neighbouring community does not; the district sees everything
    seen = (await desk.client.get("/v1/incidents", headers=as_("community"))).json()
    assert [(i["incident_id"], i["status"], i["responsible"]) for i in seen["incidents"]] == [
        (alert_id, "open", {"level": "community", "unit_id": "PA01-C01"})
    ]
    assert (await desk.client.get("/v1/incidents", headers=as_("neighbour"))).json() == {"count": 0, "incidents": []}
    assert (await desk.client.get("/v1/incidents", headers=as_("district"))).json()["count"] == 1
    polled = (await desk.client.get("/v1/alerts", headers=as_("community"))).json()["alerts"]
    assert [(a["alert_id"], a["incident_status"]) for a in polled] == [(alert_id, "open")]
    assert (await desk.client.get("/v1/alerts", headers=as_("neighbour"))).json()["alerts"] == []
    refused = await desk.client.get(f"/v1/alerts/{alert_id}", headers=as_("neighbour"))
    assert (refused.status_code, refused.json()["code"]) == (403, "out_of_scope")
    assert (await desk.act("neighbour", alert_id, "acknowledge")).status_code == 403
    assert (await desk.act("screen", alert_id, "acknowledge")).json()["code"] == "role_not_allowed"

    # the map, shapes, grids, hot spots and roll-ups answer for the scope only
    community_grids = {g.grid_id for g in desk.registry.grids if g.community_id == "PA01-C01"}
    risk = (await desk.client.get("/v1/grids/risk", headers=as_("community"))).json()
    assert {g["grid_id"] for g in risk["grids"]} == community_grids
    shapes = (await desk.client.get("/v1/grids/shapes", headers=as_("community"))).json()
    assert {g["grid_id"] for g in shapes["grids"]} == community_grids
    assert (await desk.client.get("/v1/grids", headers=as_("neighbour"))).json()["count"] == sum(
        1 for g in desk.registry.grids if g.community_id == "PA01-C02"
    )
    subdistricts = (await desk.client.get("/v1/units/subdistrict/risk", headers=as_("community"))).json()["units"]
    assert [(u["unit_id"], u["grids"]) for u in subdistricts] == [("PA01", len(community_grids))]
    outside = await desk.client.get(f"/v1/grids/{desk.grid_of('PA01-C02')}/history", headers=as_("community"))
    assert (outside.status_code, outside.json()["code"]) == (403, "out_of_scope")
    full = (await desk.client.get("/v1/grids/risk", headers=as_("screen"))).json()
    assert len(full["grids"]) == len(desk.registry.grids)

    # acknowledge after 45 s, dispatch, resolve after 20 min: states and times
    desk.clock.advance(45)
    acked = await desk.act("community", alert_id, "acknowledge", note="seen")
    assert acked.status_code == 201, acked.text
    assert acked.json()["incident"]["status"] == "acknowledged"
    second = await desk.act("subdistrict", alert_id, "acknowledge")  # kept, with no effect
    assert (second.status_code, second.json()["applied"]) == (201, False), second.text
    assert second.json()["reason"] == "acknowledge is not possible when the incident is acknowledged"
    desk.clock.advance(60)
    assert (await desk.act("community", alert_id, "dispatch", assignee="grid-worker-3")).status_code == 201
    desk.clock.advance(1095)
    bad = await desk.act("community", alert_id, "resolve", note="settled")
    assert (bad.status_code, bad.json()["field"]) == (422, "outcome")
    done = await desk.act("community", alert_id, "resolve", note="dispute settled on site", outcome="handled",
                          action_id="resolve-1")  # fmt: skip
    assert done.status_code == 201, done.text
    detail = (await desk.client.get(f"/v1/alerts/{alert_id}", headers=as_("subdistrict"))).json()
    incident = detail["incident"]
    assert (incident["status"], incident["outcome"], incident["feedback"]) == (
        "resolved", "handled", "dispute settled on site",
    )  # fmt: skip
    assert datetime.fromisoformat(incident["acknowledged_at"]) == OPENED + timedelta(seconds=45)
    assert datetime.fromisoformat(incident["dispatched_at"]) == OPENED + timedelta(seconds=105)
    assert datetime.fromisoformat(incident["resolved_at"]) == OPENED + timedelta(seconds=1200)
    assert [(h["kind"], h["actor"], h["applied"]) for h in incident["history"]] == [
        ("acknowledge", "community", True), ("acknowledge", "subdistrict", False), ("dispatch", "community", True),
        ("resolve", "community", True),
    ]  # fmt: skip
    assert incident["escalations"] == []

    # a retry of the resolve (same action id) is answered with the stored copy and stored nothing new
    desk.clock.advance(5)
    again = await desk.act("community", alert_id, "resolve", note="dispute settled on site", outcome="handled",
                           action_id="resolve-1")  # fmt: skip
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert len(alert_actions.by_id(desk.writer, "resolve-1")) == 1
    conflict = await desk.act("community", alert_id, "note", note="other", action_id="resolve-1")
    assert (conflict.status_code, conflict.json()["code"]) == (409, "action_id_conflict")

    # handling figures of the community: one incident, 45 s to acknowledge, 1200 s to resolve
    handling = await desk.client.get(
        "/v1/incidents/handling", headers=as_("subdistrict"),
        params={"start": "2026-11-23T00:00:00Z", "end": "2026-11-24T00:00:00Z", "unit_level": "community"},
    )  # fmt: skip
    assert handling.json()["units"] == [
        {"unit_id": "PA01-C01", "incidents": 1, "acknowledged": 1, "resolved": 1, "ack_median_seconds": 45.0,
         "ack_p90_seconds": 45.0, "resolve_median_seconds": 1200.0, "resolve_p90_seconds": 1200.0,
         "escalated_share": 0.0, "reopened_share": 0.0}
    ]  # fmt: skip

    # ... and next to the published index of the day, for the units of the reader's scope only
    publish(desk.writer, desk.registry, load_config(desk.settings.published_index_config_path), "day",
            date(2026, 11, 23), now=OPENED + timedelta(days=1))  # fmt: skip
    index = (await desk.client.get("/v1/index/day", headers=as_("subdistrict"), params={"date": "2026-11-23"})).json()
    units = {u["unit_id"]: u for u in index["units"]}
    assert set(units) == {u.unit_id for u in desk.registry.units["community"] if u.parent_id == "PA01"}
    assert units["PA01-C01"]["handling"] == handling.json()["units"][0]
    assert units["PA01-C02"]["handling"] is None

    # every stored action is on the alert-actions topic (the retry sent it again: consumers dedupe by id)
    records = await read_topic(desk.settings, desk.settings.topic_alert_actions, 4, timeout=10)
    sent = [orjson.loads(r.value) for r in records]
    assert sorted({d["action_id"] for d in sent} - {"resolve-1"}) == sorted(
        a.action_id for a in alert_actions.all_actions(desk.writer) if a.action_id != "resolve-1"
    )
    assert [d["kind"] for d in sent if d["action_id"] == "resolve-1"] == ["resolve", "resolve"]
    assert {r.key for r in records} == {grid.encode()}


async def test_an_incident_left_alone_passes_to_the_subdistrict_with_an_alert_on_the_stream(desk: Desk) -> None:
    grid = desk.grid_of("PA01-C01")
    alert_id = desk.red_alert(grid, OPENED, 2_000)
    incidents = desk.app.state.resources.incidents

    desk.clock.advance(299)
    assert incidents.write_due_escalations() == 0
    mine = (await desk.client.get("/v1/incidents?responsible=PA01", headers=as_("subdistrict"))).json()
    assert mine["count"] == 0

    desk.clock.advance(1)  # 300 s: red's wait at the community is over
    assert incidents.write_due_escalations() == 1
    assert incidents.write_due_escalations() == 0  # the same alert, stored once however often it runs
    mine = (await desk.client.get("/v1/incidents?responsible=PA01", headers=as_("subdistrict"))).json()
    [incident] = mine["incidents"]
    assert (incident["incident_id"], incident["escalated"], incident["responsible"]) == (
        alert_id, True, {"level": "subdistrict", "unit_id": "PA01"},
    )  # fmt: skip
    assert incident["escalations"] == [
        {"at": "2026-11-23T08:05:00Z", "from_level": "community", "to_level": "subdistrict", "unit_id": "PA01"}
    ]
    feed = (await desk.client.get("/v1/alerts", headers=as_("subdistrict"))).json()["alerts"]
    assert [(a["kind"], a["incident_id"]) for a in feed] == [("escalation", alert_id), ("unacknowledged", alert_id)]
    assert feed[1]["explanation"]["to_level"] == "subdistrict"

    # acknowledged at the subdistrict: no further escalation to the district
    assert (await desk.act("subdistrict", alert_id, "acknowledge")).status_code == 201
    desk.clock.advance(3600)
    assert incidents.write_due_escalations() == 0
    detail = (await desk.client.get(f"/v1/alerts/{alert_id}", headers=as_("district"))).json()["incident"]
    assert (detail["status"], [e["to_level"] for e in detail["escalations"]]) == ("acknowledged", ["subdistrict"])


async def test_concurrent_actions_from_two_centres_are_both_kept_with_one_final_state(desk: Desk) -> None:
    grid = desk.grid_of("PA01-C01")
    alert_id = desk.red_alert(grid, OPENED, 3_000)
    desk.clock.advance(30)
    answers = await asyncio.gather(
        desk.act("community", alert_id, "acknowledge", action_id="ack-community"),
        desk.act("subdistrict", alert_id, "acknowledge", action_id="ack-subdistrict"),
        desk.act("district", alert_id, "note", note="watching", action_id="note-district"),
    )
    assert [a.status_code for a in answers] == [201, 201, 201]
    detail = (await desk.client.get(f"/v1/alerts/{alert_id}", headers=as_("district"))).json()["incident"]
    # every action kept, once
    assert sorted(h["action_id"] for h in detail["history"]) == ["ack-community", "ack-subdistrict", "note-district"]
    applied = [h for h in detail["history"] if h["kind"] == "acknowledge" and h["applied"]]
    assert len(applied) == 1  # exactly one acknowledgement counts: the first by (time, action id)
    assert detail["status"] == "acknowledged"
    # received at 30 s; an action after another of the same incident is placed 1 ms after it (api/incidents.py)
    acknowledged = datetime.fromisoformat(detail["acknowledged_at"]) - OPENED
    assert timedelta(seconds=30) <= acknowledged <= timedelta(seconds=30, milliseconds=2)
