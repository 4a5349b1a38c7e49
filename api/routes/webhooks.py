"""``POST /v1/webhooks/{feed}``: every registered feed pushes its own raw records (``api/webhooks.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from pingan.api.deps import ResourcesDep
from pingan.api.ingest import API_KEY_SCHEME, BEARER_SCHEME, REQUEST_ID_HEADER, error_doc, request_id_of
from pingan.api.ingest_auth import authorize, presented_key
from pingan.api.ingest_batch import build_response
from pingan.api.ingest_limits import check_content_headers, read_limited
from pingan.api.ingest_models import IngestRejected, IngestResponse
from pingan.api.responses import OrjsonResponse
from pingan.api.webhooks import webhook_outcomes

router = APIRouter(tags=["ingest"])

FeedPath = Annotated[
    str,
    Path(
        pattern=r"^[a-z0-9_]+$",
        max_length=64,
        description="a registered feed with a mapper: call110, camera, checkpoint, app_report, or one of yours",
        examples=["camera"],
    ),
]


@router.post(
    "/v1/webhooks/{feed}",
    summary="Raw records of one feed in its own shape (one, an array, or a vendor batch); answered after the broker",
    response_model=IngestResponse,
    responses={
        207: {"model": IngestResponse, "description": "some records rejected (see results); the others were accepted"},
        401: error_doc("no API key, or an unknown one"),
        403: error_doc("the key may not send this feed"),
        404: error_doc("no such feed, or the feed has no mapper"),
        413: error_doc("body over ingest_max_body_bytes, or more than ingest_max_batch records"),
        415: error_doc("not application/json"),
        422: {"model": IngestRejected, "description": "every record rejected"},
        429: error_doc("too many requests in flight; retry after Retry-After seconds"),
        503: error_doc("the broker is unavailable; retry after Retry-After seconds"),
    },
)
async def feed_webhook(
    feed: FeedPath,
    request: Request,
    resources: ResourcesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER_SCHEME)],
    api_key: Annotated[str | None, Depends(API_KEY_SCHEME)],
) -> Response:
    """Each record is mapped by the feed's adapter exactly as `pingan producers tail` maps a line of a file
    (category table, place table, severity rule, the grid registry). Bad records go to the dead-letter topic
    with the reason and the origin `http:<producer>/<request id>#<index>`; the others are produced keyed by
    grid. The answer has the gateway's keys: `request_id`, `accepted`, `rejected`, `results`."""
    gateway = resources.ingest
    caller = authorize(gateway.keys, presented_key(bearer.credentials if bearer else None, api_key), feed)
    adapter = gateway.webhooks.adapter(feed)
    settings = gateway.settings
    check_content_headers(request.headers, settings.ingest_max_body_bytes)
    request_id = request_id_of(request.headers)
    with gateway.limiter.acquire() as permit:
        body = await read_limited(request.stream(), settings.ingest_max_body_bytes)
        outcomes = webhook_outcomes(
            adapter,
            body,
            rules=gateway.rules,
            origin=f"http:{caller.name}/{request_id}",
            now=gateway.clock.now(),
            max_batch=settings.ingest_max_batch,
        )
        await gateway.publish(
            permit, outcomes, caller.name, feed=feed, request_id=request_id, source="webhook",
            topic=adapter.spec.topic_name(settings),  # the feed's topic, as the tailer produces to it
        )  # fmt: skip
    status, content = build_response(outcomes, request_id)
    return OrjsonResponse(content, status_code=status, headers={REQUEST_ID_HEADER: request_id})
