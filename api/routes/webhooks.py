"""`POST /v1/webhooks/camera`: camera analytics platforms push alert batches in their own shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from api.deps import ResourcesDep
from api.errors import ApiError
from api.ingest import API_KEY_SCHEME, BEARER_SCHEME, error_doc
from api.ingest_auth import authorize, presented_key
from api.ingest_limits import check_content_headers, read_limited
from api.responses import OrjsonResponse
from pingan.errors import ServiceError
from producers.adapters.camera import handle_webhook

router = APIRouter(tags=["ingest"])


@router.post(
    "/v1/webhooks/camera",
    summary="Camera analytics alert batch (vendor shape); answered after the broker has it",
    responses={
        207: {"description": "some alerts rejected (see `rejected`); the others were produced"},
        401: error_doc("no API key, or an unknown one"),
        403: error_doc("the key may not send camera events"),
        413: error_doc("body over ingest_max_body_bytes"),
        415: error_doc("not application/json"),
        429: error_doc("too many requests in flight; retry after Retry-After seconds"),
        503: error_doc("the broker is unavailable; retry after Retry-After seconds"),
    },
)
async def camera_webhook(
    request: Request,
    resources: ResourcesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER_SCHEME)],
    api_key: Annotated[str | None, Depends(API_KEY_SCHEME)],
) -> Response:
    """The body is the vendor's document (`{"camera_id", "grid_id" or location, "alerts": [...]}`); each alert
    is mapped through the camera table in deploy/config/feeds.toml. Bad alerts go to the dead-letter topic
    with the reason and are listed in the answer; the others are produced keyed by grid."""
    gateway = resources.ingest
    authorize(gateway.keys, presented_key(bearer.credentials if bearer else None, api_key), "camera")
    settings = resources.settings
    check_content_headers(request.headers, settings.ingest_max_body_bytes)
    with gateway.limiter.acquire():
        body = await read_limited(request.stream(), settings.ingest_max_body_bytes)
        try:
            publisher = await resources.camera_webhook.started_publisher()
            outcome = await handle_webhook(resources.camera_webhook.adapter, publisher, body, now=resources.clock.now())
        except ServiceError as exc:
            raise ApiError(503, "broker_unavailable", str(exc), headers={"Retry-After": "5"}) from None
    content = outcome.as_json()
    status = 200 if not outcome.rejected else (207 if outcome.accepted else 422)
    return OrjsonResponse(content, status_code=status)
