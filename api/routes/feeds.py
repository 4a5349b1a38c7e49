"""``GET /v1/feeds``: every registered feed with its counts (accepted, dead-lettered by kind, last seen)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

from pingan.api.deps import ExecutorDep, ResourcesDep
from pingan.api.models import ErrorBody
from pingan.api.responses import OrjsonResponse
from pingan.feeds import feed_counts
from pingan.store import dead_letters, events

router = APIRouter(tags=["ops"])


class FeedCountsBody(BaseModel):
    feed: str = Field(description="the feed (envelope source); '' for dead letters whose feed is unknown")
    accepted: int = Field(description="distinct events of the feed stored in ClickHouse")
    dead_lettered: int = Field(description="its rows in the dead-letter table, every way in")
    dead_lettered_by_kind: dict[str, int]
    last_seen: datetime | None = Field(description="its latest event (receive time) or dead letter; null if never")


class FeedsResponse(BaseModel):
    feeds: list[FeedCountsBody]


@router.get(
    "/v1/feeds",
    summary="Registered feeds: events stored, records dead-lettered by kind, when each was last seen",
    response_model=FeedsResponse,
    responses={503: {"model": ErrorBody}},
)
def list_feeds(resources: ResourcesDep, executor: ExecutorDep) -> Response:
    """From ClickHouse: `accepted` counts distinct stored events of the feed, `dead_lettered_by_kind` its rows
    in the dead-letter table (every way in), `last_seen` its latest event or dead letter. Dead letters whose
    feed could not be told (not JSON, no source) are listed under feed `""`."""
    names = sorted(resources.ingest.rules.payload_models)
    counts = feed_counts(names, events.count_by_source(executor), dead_letters.count_by_feed_and_kind(executor))
    return OrjsonResponse({"feeds": [count.as_json() for count in counts]})
