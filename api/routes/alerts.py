"""Alerts: escalations to orange or red and steps down from them, as a cursor poll and as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from api.deps import ExecutorDep, ResourcesDep
from api.errors import ApiError
from api.models import ErrorBody
from api.responses import OrjsonResponse
from pingan.errors import InvalidCursor
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
    responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def poll_alerts(
    executor: ExecutorDep,
    after: Annotated[str | None, Query(description="`next_cursor` of the previous page; omit to start")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Each alert carries its own cursor; poll again with `after=next_cursor` to get only newer ones."""
    page = _page(executor, after, limit)
    next_cursor = page[-1]["cursor"] if page else after
    return OrjsonResponse({"alerts": page, "next_cursor": next_cursor})


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
    after: Annotated[str | None, Query(description="start after this cursor (as in /v1/alerts)")] = None,
    tail: Annotated[
        int | None,
        Query(ge=1, le=500, description="without a cursor: start with the newest `tail` alerts instead of all"),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Sends every alert after the cursor (or the newest `tail`, or all from the start), then new ones as
    they are stored (read once a second for every stream, api/alert_feed.py). A reconnecting client's
    `Last-Event-ID` wins over both; a comment line keeps the connection alive every 15 s."""
    cursor = last_event_id or after
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
            yield _sse(alert)
        while not await request.is_disconnected():
            changed = feed.changed()  # taken before reading: a change after the read still wakes us
            page = feed.after(cursor)
            if page is None:  # older than what the shared feed holds: catch up from ClickHouse
                page = await run_in_threadpool(_page, executor, cursor, 500)
                if not page and not feed.loaded:
                    await asyncio.sleep(SSE_POLL_SECONDS)  # the feed's first read is still under way
            for alert in page:
                yield _sse(alert)
            if page:
                cursor = page[-1]["cursor"]
                continue
            try:
                await asyncio.wait_for(changed.wait(), timeout=SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
