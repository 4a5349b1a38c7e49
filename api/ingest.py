"""``POST /v1/ingest/{source}``: events over HTTP for producers that cannot speak Kafka (docs/ingest.md).

The handler is the order of checks, each refusing as early and as cheaply as it can: key (401/403), known
source (404), declared size and type (413/415), a free in-flight slot (429), the body read with its limit
(413), its shape (400/413/422), then every item, then delivery (503). The rules live in ingest_auth,
ingest_limits and ingest_batch; the producer in ingest_gateway.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from pingan.api.deps import ResourcesDep
from pingan.api.errors import ApiError
from pingan.api.ingest_auth import authorize, presented_key
from pingan.api.ingest_batch import build_response, check_items, split_body
from pingan.api.ingest_gateway import IngestGateway
from pingan.api.ingest_limits import check_content_headers, read_limited
from pingan.api.ingest_models import REQUEST_EXAMPLES, IngestRejected, IngestResponse
from pingan.api.models import ErrorBody
from pingan.api.responses import OrjsonResponse

router = APIRouter(tags=["ingest"])

BEARER_SCHEME = HTTPBearer(auto_error=False, scheme_name="IngestBearer", description="`Authorization: Bearer <key>`")
API_KEY_SCHEME = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="IngestApiKey", description="or `X-API-Key`"
)


async def get_ingest(resources: ResourcesDep) -> IngestGateway:
    return resources.ingest


IngestDep = Annotated[IngestGateway, Depends(get_ingest)]
SourcePath = Annotated[
    str,
    Path(
        pattern=r"^[a-z0-9_]+$",
        max_length=64,
        description="the feed: call110, camera, checkpoint, app_report (or a registered plugin feed)",
        examples=["call110"],
    ),
]


REQUEST_ID_HEADER: Final = "X-Request-ID"
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def request_id_of(headers: Mapping[str, str]) -> str:
    """The caller's X-Request-ID when it is a plain token (it ends up in dead-letter origins), else a new one."""
    given = headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def error_doc(description: str, model: type = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "One envelope, or `{\"events\": [envelope, ...]}` of up to `ingest_max_batch` (500). "
        "An envelope without `source` takes the path's; one with another source is rejected.",
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"$ref": "#/components/schemas/Envelope"},
                                     {"$ref": "#/components/schemas/IngestBatch"}]},
                "examples": REQUEST_EXAMPLES,
            }
        },
    }
}  # fmt: skip


@router.post(
    "/v1/ingest/{source}",
    summary="Send events of one source (single event or a batch); answered after the broker has them",
    response_model=IngestResponse,
    responses={
        207: {"model": IngestResponse, "description": "some items rejected (see results); the others were accepted"},
        400: error_doc("the body is not JSON"),
        401: error_doc("no API key, or an unknown one (WWW-Authenticate)"),
        403: error_doc("the key may not send this source"),
        404: error_doc("no such source"),
        413: error_doc("body over ingest_max_body_bytes, or more than ingest_max_batch events"),
        415: error_doc("not application/json, or compressed"),
        422: {"model": IngestRejected, "description": "every item rejected, or the body is neither shape"},
        429: error_doc("too many requests in flight; retry after Retry-After seconds"),
        503: error_doc("the broker is unavailable or slow; retry after Retry-After seconds with the same event ids"),
    },
    openapi_extra=_REQUEST_BODY,
)
async def ingest(
    source: SourcePath,
    request: Request,
    gateway: IngestDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER_SCHEME)],
    api_key: Annotated[str | None, Depends(API_KEY_SCHEME)],
) -> Response:
    """Validates every item with the rules every way in shares (envelope, time ranges, the feed's types and
    severity, the grid registry). Accepted items go to the events topic keyed by grid, rejected ones to the
    dead-letter topic with the reason and the origin `http:<producer>/<request id>#<index>` (the request id
    is the caller's `X-Request-ID` or a new one, returned in the body and the header); the answer lists each
    item's result and comes only after the broker has acknowledged all of them (`acks=all`)."""
    caller = authorize(gateway.keys, presented_key(bearer.credentials if bearer else None, api_key), source)
    if source not in gateway.rules.payload_models:
        known = ", ".join(sorted(gateway.rules.payload_models))
        raise ApiError(404, "unknown_source", f"no source {source!r}; known: {known}", "source")
    settings = gateway.settings
    check_content_headers(request.headers, settings.ingest_max_body_bytes)
    request_id = request_id_of(request.headers)
    with gateway.limiter.acquire() as permit:
        body = await read_limited(request.stream(), settings.ingest_max_body_bytes)
        items, raw = split_body(body, settings.ingest_max_batch)
        outcomes = check_items(items, source=source, now=gateway.clock.now(), rules=gateway.rules, raw=raw)
        await gateway.publish(permit, outcomes, caller.name, feed=source, request_id=request_id)
    status, content = build_response(outcomes, request_id)
    return OrjsonResponse(content, status_code=status, headers={REQUEST_ID_HEADER: request_id})
