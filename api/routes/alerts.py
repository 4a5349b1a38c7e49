"""Alerts: escalations to orange or red and steps down from them, as a cursor poll and as Server-Sent Events;
the incident each escalation opened, the actions of command centres on it, and the handling figures.

Every read answers for the caller's scope only (api/scopes.py); actions need an operator or admin key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from pingan.api.access import ActorDep, ReaderDep
from pingan.api.deps import ExecutorDep, Resources, ResourcesDep
from pingan.api.errors import ApiError, invalid, not_found
from pingan.api.incident_models import ActionResult, AlertDetail, HandlingResponse, IncidentsResponse
from pingan.api.incidents import new_action_id, same_request
from pingan.api.models import ErrorBody
from pingan.api.params import within_storable
from pingan.api.responses import OrjsonResponse
from pingan.api.scopes import Scope, require_grid, visible
from pingan.errors import InvalidCursor, ServiceError
from pingan.incidents import ACTION_KINDS, OUTCOMES, STATUSES, Action, Book, handling_figures, request_problem
from pingan.index.alerts import UNACKNOWLEDGED
from pingan.store import alerts
from pingan.store.client import Executor

router = APIRouter(tags=["alerts"])

SSE_POLL_SECONDS = 1.0
SSE_KEEPALIVE_SECONDS = 15.0


def _page(executor: Executor, after: str | None, limit: int) -> list[dict[str, Any]]:
    try:
        return alerts.after(executor, after, limit=limit)
    except InvalidCursor as exc:
        raise ApiError(422, "invalid_cursor", exc.reason, exc.field) from None


@router.get(
    "/v1/alerts",
    summary="Alerts after a cursor, oldest first",
    responses={
        404: {"model": ErrorBody, "description": "unknown unit"},
        422: {"model": ErrorBody},
        503: {"model": ErrorBody},
    },
)
def poll_alerts(
    resources: ResourcesDep,
    caller: ReaderDep,
    executor: ExecutorDep,
    after: Annotated[str | None, Query(description="`next_cursor` of the previous page; omit to start")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[
        str | None,
        Query(
            description="only alerts whose incident is in one of these states (comma-separated: "
            f"{', '.join(STATUSES)}, or `active` for the first three)"
        ),
    ] = None,
    unit: Annotated[
        str | None, Query(description="only alerts of this unit's grids (any unit id of the registry)")
    ] = None,
) -> Response:
    """Each alert carries its own cursor; poll again with `after=next_cursor` to get only newer ones.

    Only alerts of the key's scope are listed, each with `incident_id` and `incident_status` (the incident it
    opened or joined; null for steps down). `next_cursor` moves past alerts the filters left out, so a
    filtered poll never reads them again."""
    scope = resources.scopes.of(caller)
    statuses = _statuses(status)
    unit_scope = _unit_scope(resources, unit)
    page = _page(executor, after, limit)
    next_cursor = page[-1]["cursor"] if page else after
    book = resources.incidents.book()[0]
    shown = []
    for alert in page:
        if not visible(scope, alert["grid_id"]) or not visible(unit_scope, alert["grid_id"]):
            continue
        annotated = _with_incident(alert, book)
        if statuses is None or annotated["incident_status"] in statuses:
            shown.append(annotated)
    return OrjsonResponse({"alerts": shown, "next_cursor": next_cursor})


def _statuses(status: str | None) -> frozenset[str] | None:
    if status is None:
        return None
    wanted = {part.strip() for part in status.split(",") if part.strip()}
    if "active" in wanted:
        wanted = (wanted - {"active"}) | {"open", "acknowledged", "dispatched"}
    unknown = wanted - set(STATUSES)
    if unknown or not wanted:
        raise invalid(f"status: {', '.join(sorted(unknown)) or 'empty'}; use {', '.join(STATUSES)} or active",
                      "status")  # fmt: skip
    return frozenset(wanted)


def _unit_scope(resources: Resources, unit: str | None) -> Scope | None:
    if unit is None:
        return None
    if resources.registry.unit(unit) is None:
        raise not_found(f"unit {unit!r} is not in the registry", "unit")
    return resources.scopes.get(unit)


def _with_incident(alert: dict[str, Any], book: Book) -> dict[str, Any]:
    incident = book.for_alert(alert["alert_id"])
    if incident is None and alert["kind"] == UNACKNOWLEDGED and alert["explanation"]:
        incident = book.incidents.get(alert["explanation"].get("incident_id", ""))
    return {**alert, "incident_id": incident.incident_id if incident else None,
            "incident_status": incident.status if incident else None}  # fmt: skip


def _sse(alert: dict[str, Any]) -> bytes:
    return b"id: " + alert["cursor"].encode() + b"\nevent: alert\ndata: " + orjson.dumps(alert) + b"\n\n"


@router.get(
    "/v1/alerts/stream",
    summary="Alerts as Server-Sent Events (resumes from Last-Event-ID)",
    response_class=StreamingResponse,
)
async def stream_alerts(
    request: Request,
    resources: ResourcesDep,
    caller: ReaderDep,
    after: Annotated[str | None, Query(description="start after this cursor (as in /v1/alerts)")] = None,
    tail: Annotated[
        int | None,
        Query(ge=1, le=500, description="without a cursor: start with the newest `tail` alerts instead of all"),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Sends every alert of the key's scope after the cursor (or the newest `tail`, or all from the start),
    then new ones as they are stored (read once a second for every stream, api/alert_feed.py). A reconnecting client's
    `Last-Event-ID` wins over both; a comment line keeps the connection alive every 15 s."""
    cursor = last_event_id or after
    scope = resources.scopes.of(caller)
    executor = resources.storage.executor
    feed = resources.alert_feed
    first: list[dict[str, Any]] = []
    if cursor:
        await run_in_threadpool(_page, executor, cursor, 1)  # a bad cursor is a 422 now, not a broken stream
    elif tail is not None:
        # From ClickHouse, once per connection: the shared feed may be a second behind, and its cursor must
        # be exact (an empty answer means "from the start", so new alerts still follow).
        first = await run_in_threadpool(alerts.newest, executor, tail)
        cursor = first[-1]["cursor"] if first else None

    async def events() -> AsyncIterator[bytes]:
        nonlocal cursor
        for alert in first:
            if visible(scope, alert["grid_id"]):
                yield _sse(alert)
        while not await request.is_disconnected():
            changed = feed.changed()  # taken before reading: a change after the read still wakes us
            page = feed.after(cursor)
            if page is None:  # older than what the shared feed holds: catch up from ClickHouse
                page = await run_in_threadpool(_page, executor, cursor, 500)
                if not page and not feed.loaded:
                    await asyncio.sleep(SSE_POLL_SECONDS)  # the feed's first read is still under way
            for alert in page:
                if visible(scope, alert["grid_id"]):
                    yield _sse(alert)
            if page:
                cursor = page[-1]["cursor"]
                continue
            try:
                await asyncio.wait_for(changed.wait(), timeout=SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# --- incidents: one alert, actions on it, lists and handling figures ------------------------------------


def _book(resources: Resources) -> Book:
    return resources.incidents.book()[0]


@router.get(
    "/v1/alerts/{alert_id}",
    summary="One alert with its incident: state, times, escalations and the history of actions",
    response_model=AlertDetail,
    responses={403: {"model": ErrorBody}, 404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def alert_detail(
    resources: ResourcesDep,
    caller: ReaderDep,
    executor: ExecutorDep,
    alert_id: Annotated[str, Path(description="an alert's `alert_id`")],
) -> Response:
    alert = alerts.by_id(executor, alert_id)
    if alert is None:
        raise not_found(f"no alert {alert_id!r}", "alert_id")
    require_grid(resources.scopes.of(caller), alert["grid_id"])
    book = _book(resources)
    annotated = _with_incident(alert, book)
    incident = book.incidents.get(annotated["incident_id"] or "")
    return OrjsonResponse({**annotated, "incident": incident.as_dict() if incident else None})


class ActionRequest(BaseModel):
    """One action on the incident of an alert. Send your own `action_id` (e.g. a UUID) and repeat it when
    retrying a request that got no answer: the action is then stored once."""

    kind: Annotated[str, Field(description=f"one of {', '.join(ACTION_KINDS)}")]
    action_id: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9._:\-]{1,80}$")] = None
    note: Annotated[str, Field(max_length=2000, description="free text; required for resolve (the feedback)")] = ""
    assignee: Annotated[str, Field(max_length=120, description="assign/dispatch: a unit id or a grid worker")] = ""
    outcome: Annotated[str, Field(description=f"resolve: one of {', '.join(OUTCOMES)}")] = ""
    target: Annotated[str, Field(max_length=200, description="merge: an alert id of the incident to merge into")] = ""


async def _publish(resources: Resources, action: Action) -> None:
    try:
        await resources.incidents.publisher.publish(action)
    except ServiceError as exc:
        raise ApiError(503, "broker_unavailable",
                       f"the action is stored but not yet on the alert-actions topic ({exc}); send it again with "
                       f"the same action_id {action.action_id!r}: it will not be counted twice",
                       headers={"Retry-After": "2"}) from None  # fmt: skip


@router.post(
    "/v1/alerts/{alert_id}/actions",
    summary="Act on an alert's incident: acknowledge, assign, dispatch, resolve, reopen, merge or note",
    response_model=ActionResult,
    status_code=201,
    responses={
        200: {"description": "a repeat of an action already stored (`duplicate: true`): nothing changed"},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
        409: {"model": ErrorBody},
        422: {"model": ErrorBody},
        503: {"model": ErrorBody},
    },
)
async def act_on_alert(
    resources: ResourcesDep,
    caller: ActorDep,
    body: ActionRequest,
    alert_id: Annotated[str, Path(description="the `alert_id` of any alert of the incident")],
) -> Response:
    """Stored in ClickHouse and sent to the `alert-actions` topic before the answer (201 with the action and
    the incident after it). An action the incident's state does not allow (e.g. a second acknowledge) is kept
    in the history with no effect: `applied: false` and the `reason`. 409 `action_id_conflict` when the id
    was used for another action."""
    desk = resources.incidents
    sent = Action(action_id=body.action_id or new_action_id(), alert_id=alert_id, grid_id="", kind=body.kind,
                  actor=caller.name, at=resources.clock.now(), note=body.note, assignee=body.assignee,
                  outcome=body.outcome, target=body.target, actor_scope=caller.scope)  # fmt: skip
    problem = request_problem(sent)
    if problem is not None:
        raise invalid(f"{problem[0]}: {problem[1]}", problem[0])
    stored = await run_in_threadpool(desk.stored_copy, sent.action_id)
    if stored is not None:
        if not same_request(stored, sent):
            raise ApiError(409, "action_id_conflict", f"action_id {sent.action_id!r} is another action's", "action_id")
        await _publish(resources, stored)
        book = await run_in_threadpool(_book, resources)
        incident = book.for_alert(stored.alert_id)
        entry = (
            next((e for e in incident.history if e.action.action_id == stored.action_id), None) if incident else None
        )
        return OrjsonResponse({"action": stored.as_dict(), "applied": bool(entry and entry.applied),
                               "reason": entry.reason or None if entry else None, "duplicate": True,
                               "incident": incident.as_dict() if incident else None})  # fmt: skip
    book = await run_in_threadpool(_book, resources)
    incident = book.for_alert(alert_id)
    if incident is None:
        raise not_found(f"alert {alert_id!r} opened no incident (unknown, or not an escalation)", "alert_id")
    require_grid(resources.scopes.of(caller), incident.grid_id)
    action = desk.received(sent, incident)
    trial = await run_in_threadpool(lambda: desk.book((action,))[0])
    after = trial.for_alert(alert_id)
    assert after is not None
    entry = next(e for e in after.history if e.action.action_id == action.action_id)
    # Kept even when the state does not allow it (a second acknowledgement, two centres at once): the
    # history shows who tried what, and the answer says it changed nothing (applied: false, reason).
    await run_in_threadpool(desk.store, action)
    await _publish(resources, action)
    return OrjsonResponse({"action": action.as_dict(), "applied": entry.applied, "reason": entry.reason or None,
                           "duplicate": False, "incident": after.as_dict()}, status_code=201)  # fmt: skip


@router.get(
    "/v1/incidents",
    summary="Incidents of the key's scope, newest first, with state, responsible centre and times",
    response_model=IncidentsResponse,
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def list_incidents(
    resources: ResourcesDep,
    caller: ReaderDep,
    status: Annotated[str | None, Query(description=f"comma-separated: {', '.join(STATUSES)}, or active")] = None,
    unit: Annotated[str | None, Query(description="only incidents of this unit's grids")] = None,
    grid_id: Annotated[str | None, Query(description="only incidents of this grid")] = None,
    responsible: Annotated[
        str | None, Query(description="only incidents this unit is responsible for now (after escalations)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Response:
    scope = resources.scopes.of(caller)
    statuses = _statuses(status)
    unit_scope = _unit_scope(resources, unit)
    book = _book(resources)
    found = [
        incident for incident in book.incidents.values()
        if visible(scope, incident.grid_id) and visible(unit_scope, incident.grid_id)
        and (statuses is None or incident.status in statuses)
        and (responsible is None or incident.responsible_unit == responsible)
        and (grid_id is None or incident.grid_id == grid_id)
    ]  # fmt: skip
    found.sort(key=lambda i: (i.opened_at, i.incident_id), reverse=True)
    return OrjsonResponse({"count": len(found), "incidents": [i.as_dict(with_history=False) for i in found[:limit]]})


@router.get(
    "/v1/incidents/handling",
    summary="Handling figures per unit: incidents, time to acknowledge and to resolve (median, p90), shares "
    "escalated and reopened",
    response_model=HandlingResponse,
    responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def incident_handling(
    resources: ResourcesDep,
    caller: ReaderDep,
    start: Annotated[AwareDatetime, Query(description="incidents opened from (inclusive), ISO-8601 with a zone")],
    end: Annotated[AwareDatetime, Query(description="to (exclusive)")],
    unit_level: Annotated[str, Query(description="community, subdistrict, district or police_station")] = "community",
) -> Response:
    if unit_level not in ("community", "subdistrict", "district", "police_station"):
        raise invalid("unit_level: community, subdistrict, district or police_station", "unit_level")
    within_storable(start, "start")
    within_storable(end, "end")
    if end <= start:
        raise invalid("end: must be after start", "end")
    scope = resources.scopes.of(caller)
    book = _book(resources)
    shown = [i for i in book.incidents.values() if visible(scope, i.grid_id)]
    figures = handling_figures(shown, lambda i: i.scope_units.get(unit_level), start, end)
    return OrjsonResponse({"unit_level": unit_level, "start": start, "end": end,
                           "units": [f.as_dict() for f in figures.values()]})  # fmt: skip
