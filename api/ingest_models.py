"""Request and response bodies of ``POST /v1/ingest/{source}`` for OpenAPI (handlers render with orjson)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pingan.api.models import ErrorDetail
from pingan.schemas.envelope import Envelope

_EVENT: dict[str, Any] = {
    "event_id": "cad-20261123-000412",
    "source": "call110",
    "type": "dispute",
    "severity": 3,
    "event_time": "2026-11-23T14:03:27+08:00",
    "grid_id": "G0412",
    "payload": {"incident_id": "20261123-000412", "category": "dispute", "priority": 2,
                "reported_at": "2026-11-23T14:03:27+08:00"},
}  # fmt: skip
_LOCATED: dict[str, Any] = {
    "event_id": "cad-20261123-000413",
    "type": "traffic",
    "severity": 2,
    "event_time": "2026-11-23T14:04:02+08:00",
    "location": {"lon": 116.4012, "lat": 39.9087},
    "payload": {"incident_id": "20261123-000413", "category": "traffic", "priority": 3,
                "reported_at": "2026-11-23T14:04:02+08:00"},
}  # fmt: skip

REQUEST_EXAMPLES: dict[str, Any] = {
    "single": {"summary": "one event", "value": _EVENT},
    "batch": {
        "summary": "a batch; the second item takes its source from the path",
        "value": {"events": [_EVENT, _LOCATED]},
    },
}


class IngestBatch(BaseModel):
    """A batch: up to ``ingest_max_batch`` envelopes (default 500). A body that is not a batch is one event."""

    model_config = ConfigDict(extra="forbid")

    events: list[Envelope] = Field(min_length=1, description="envelopes; `source` may be left out (the path's)")


class IngestItemError(BaseModel):
    kind: str = Field(description="the dead-letter kinds every way in shares: missing_field, invalid_field, "
                      "unknown_type, unknown_category, unknown_place, unknown_grid, oversize, …; plus "
                      "source_mismatch when the item's source is not the path's")  # fmt: skip
    field: str | None = Field(description="dotted path of the offending field, when there is one")
    reason: str


class IngestItemResult(BaseModel):
    index: int = Field(description="position in the batch (0 for a single event)")
    event_id: str | None = Field(description="the item's event_id, when it has a string one")
    status: Literal["accepted", "rejected"]
    error: IngestItemError | None = Field(default=None, description="why it was rejected (rejected items only)")


_RESULTS_207 = {
    "request_id": "7f3a9c0e2b6d4e1f8a5b3c2d1e0f9a8b",
    "accepted": 1,
    "rejected": 1,
    "results": [
        {"index": 0, "event_id": "cad-20261123-000412", "status": "accepted"},
        {"index": 1, "event_id": "cad-20261123-000413", "status": "rejected",
         "error": {"kind": "out_of_range", "field": "severity", "reason": "Input should be less than or equal to 5"}},
    ],
}  # fmt: skip


class IngestResponse(BaseModel):
    """Per-item results, in batch order: 200 when every item was accepted, 207 when some were rejected."""

    model_config = ConfigDict(json_schema_extra={"examples": [_RESULTS_207]})

    request_id: str = Field(
        description="names this request in the dead letters' origins (`http:<producer>/<request id>#<index>`): "
        "the caller's X-Request-ID when given, else a new one"
    )
    accepted: int = Field(description="items the broker has acknowledged on the events topic")
    rejected: int = Field(description="items refused; each is also on the dead-letter topic")
    results: list[IngestItemResult]


class IngestRejected(IngestResponse):
    """422 when every item was rejected: the usual error body plus the per-item results."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": {"code": "rejected", "message": "the event was rejected; see results"},
                 "request_id": "7f3a9c0e2b6d4e1f8a5b3c2d1e0f9a8b", "accepted": 0,
                 "rejected": 1, "results": [{"index": 0, "event_id": "x-1", "status": "rejected",
                 "error": {"kind": "unknown_grid", "field": "grid_id",
                           "reason": "grid 'G9999' is not in the grid registry"}}]}
            ]
        }
    )  # fmt: skip

    error: ErrorDetail


# Published in components/schemas by the app's OpenAPI hook (the request body is documented by hand, since the
# handler reads the raw body itself to enforce the size limit while reading).
OPENAPI_MODELS: tuple[type[BaseModel], ...] = (IngestBatch,)
