"""Operations: dead letters, liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from pingan.api.access import CallerDep, DeadLetterReaderDep
from pingan.api.deps import ExecutorDep, ResourcesDep
from pingan.api.errors import error_response
from pingan.api.metrics import MEDIA_TYPE as METRICS_MEDIA_TYPE
from pingan.api.models import DeadLettersResponse, ErrorBody, Health, NotReady, Ready
from pingan.api.readiness import check_clickhouse, check_log_losses, with_log_losses
from pingan.api.responses import OrjsonResponse
from pingan.api.views import redacted_letter
from pingan.store import dead_letters

router = APIRouter(tags=["ops"])

RAW_LIMIT = 2048  # characters of each dead letter's raw record returned


@router.get(
    "/v1/dead-letters",
    summary="Recent dead letters (records that could not become events)",
    response_model=DeadLettersResponse,
    responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def recent_dead_letters(
    resources: ResourcesDep,
    caller: DeadLetterReaderDep,
    executor: ExecutorDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="how many, most recent first")] = 100,
) -> Response:
    """Needs an analyst or admin key. Plates, phone numbers and person ids in `raw` and `reason` are
    pseudonymised (keyed hash, as producers do) or masked, unless the key is admin's (`redacted` says)."""
    key = resources.settings.pseudonym_key.get_secret_value().encode()
    letters = []
    for letter in dead_letters.recent(executor, limit=limit):
        if not caller.sees_raw_personal_data:
            letter = redacted_letter(letter, key)
        raw = letter["raw"]
        letters.append({**letter, "raw": raw[:RAW_LIMIT], "raw_truncated": len(raw) > RAW_LIMIT,
                        "redacted": not caller.sees_raw_personal_data})  # fmt: skip
    return OrjsonResponse({"count_by_kind": dead_letters.count_by_kind(executor), "dead_letters": letters})


@router.get("/healthz", summary="Liveness: the process answers (no I/O)", response_model=Health)
async def healthz() -> Response:
    return OrjsonResponse({"status": "alive"})


@router.get(
    "/readyz",
    summary="Readiness: broker and ClickHouse answer; worker lag is reported",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "the broker or ClickHouse does not answer"}},
)
async def readyz(resources: ResourcesDep, caller: CallerDep) -> Response:
    """200 when the broker answers a metadata request and ClickHouse a query, each within 2 s.

    The worker's lag (its consumer group's committed offsets against the end of the events topic) is
    reported but does not make the API unready: the API still serves what ClickHouse holds. The checks
    (hosts' errors, lag per partition) are shown to a key of any role only.
    """
    (broker, worker), clickhouse, losses = await asyncio.gather(
        resources.kafka.check(), check_clickhouse(resources.storage),
        check_log_losses(resources.storage, resources.clock),
    )  # fmt: skip
    checks = {"broker": broker, "clickhouse": clickhouse, "worker": with_log_losses(worker, losses)}
    failed = [name for name in ("broker", "clickhouse") if not checks[name]["ok"]]
    details = {"checks": checks} if caller is not None else {}
    if failed:
        return error_response(503, "not_ready", f"not ready: {', '.join(failed)} unavailable", **details)
    return OrjsonResponse({"status": "ready", **details})


@router.get(
    "/metrics",
    summary="Prometheus metrics: request latency per route, map snapshot age, worker lag, events, dead letters, alerts",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"}},
)
async def metrics(request: Request, resources: ResourcesDep) -> Response:
    """Open like /healthz (scrapers rarely carry keys; nothing here names a person or a place)."""
    body = await request.app.state.metrics.render(resources)
    return Response(body, media_type=METRICS_MEDIA_TYPE)
