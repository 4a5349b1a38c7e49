"""The ingest gateway's pure part: a request body in, per-item outcomes and the response out. No I/O.

Body: one envelope (a JSON object), or a batch ``{"events": [envelope, ...]}`` of up to ``ingest_max_batch``.
Each item is checked with the one validation every way in shares (:meth:`pingan.feeds.FeedRules.validate`:
:func:`pingan.schemas.envelope.parse_event` and the feed's type and severity rules), then
:func:`pingan.grids.resolve_grid`, so anything the gateway accepts the worker accepts too, and a
producer learns about a bad event at once instead of finding it later among the dead letters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel

from pingan.api.errors import ApiError, error_body
from pingan.dead_letter import DeadLetter
from pingan.errors import InvalidEvent
from pingan.feeds import FeedRules
from pingan.grids import GridLookup, resolve_grid

__all__ = [
    "Accepted",
    "ItemRules",
    "Rejected",
    "build_response",
    "check_item",
    "check_items",
    "split_body",
]


@dataclass(frozen=True, slots=True)
class Accepted:
    index: int
    event_id: str
    key: bytes  # the grid id, so the event lands on the partition holding its grid's window state
    value: bytes  # exactly the bytes that were validated


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    event_id: str | None
    error: InvalidEvent
    raw: bytes  # the item as the producer sent it, for the dead-letter topic
    letter: DeadLetter | None = None  # already made (a webhook's adapter); else the gateway makes it


Outcome = Accepted | Rejected


@dataclass(frozen=True)
class ItemRules:
    """What an item is checked against: the feeds' rules with the worker's limits, and the grid registry."""

    grids: GridLookup
    feeds: FeedRules

    @classmethod
    def of(
        cls,
        grids: GridLookup,
        payload_models: Mapping[str, type[BaseModel]],
        *,
        max_event_bytes: int = 64 * 1024,
        max_future: timedelta = timedelta(minutes=5),
    ) -> ItemRules:
        """Rules with payload models only (no category tables): for callers that have no feed registry."""
        feeds = FeedRules(payload_models, {}, max_event_bytes, max_future)
        return cls(grids, feeds)

    @property
    def payload_models(self) -> Mapping[str, type[BaseModel]]:
        return self.feeds.payload_models


def split_body(body: bytes, max_batch: int) -> tuple[list[Any], bytes | None]:
    """The items of a body, and for a single event its exact bytes (a batch item's are not kept by the parser).

    Raises ApiError for a body that is not one of the two shapes: 400 not JSON, 413 more than ``max_batch``
    events, 422 anything else. Those refuse the whole request: nothing is produced or dead-lettered, the
    caller is told.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiError(
            422,
            "invalid_body",
            f'expected one event (a JSON object) or a batch {{"events": [...]}}, got a JSON {_json_type(document)}',
        )
    if "events" not in document:
        return [document], body
    if len(document) != 1:
        others = ", ".join(sorted(key for key in document if key != "events"))
        raise ApiError(422, "invalid_body", f'a batch has only an "events" array; unexpected: {others}', "events")
    events = document["events"]
    if not isinstance(events, list):
        raise ApiError(422, "invalid_body", f'"events" must be an array, got a JSON {_json_type(events)}', "events")
    if not events:
        raise ApiError(422, "invalid_body", "the batch has no events", "events")
    if len(events) > max_batch:
        raise ApiError(
            413, "too_many_events", f"the batch has {len(events)} events; the limit is {max_batch}", "events"
        )
    return events, None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "object"


def check_item(
    index: int, item: Any, *, source: str, now: datetime, rules: ItemRules, raw: bytes | None = None
) -> Outcome:
    """One item's outcome. ``source`` comes from the path: an item without one gets it, another is refused.

    A missing ``receive_time`` is set to ``now``: the gateway is where the event reached the system.
    """
    original = raw if raw is not None else orjson.dumps(item)
    if not isinstance(item, dict):
        event_id = None
        value = original
    else:
        found_id = item.get("event_id")
        event_id = found_id if isinstance(found_id, str) else None
        claimed = item.get("source")
        if claimed is not None and claimed != source:
            reason = f"source {claimed!r} does not match the path's {source!r}"
            return Rejected(index, event_id, InvalidEvent("source_mismatch", reason, "source"), original)
        filled = {**item, "source": source} if claimed is None else item
        if filled.get("receive_time") is None:
            filled = {**filled, "receive_time": now}
        value = original if filled is item else orjson.dumps(filled)
    try:
        event = rules.feeds.validate(value, now=now)
        grid_id = resolve_grid(event, rules.grids)
    except InvalidEvent as error:
        return Rejected(index, event_id, error, original)
    return Accepted(index, event.event_id, grid_id.encode(), value)


def check_items(
    items: Sequence[Any], *, source: str, now: datetime, rules: ItemRules, raw: bytes | None = None
) -> list[Outcome]:
    """Outcomes of every item, in order; ``raw`` is the exact body when it is a single event."""
    if raw is not None and len(items) == 1:
        return [check_item(0, items[0], source=source, now=now, rules=rules, raw=raw)]
    return [check_item(index, item, source=source, now=now, rules=rules) for index, item in enumerate(items)]


def item_result(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Accepted):
        return {"index": outcome.index, "event_id": outcome.event_id, "status": "accepted"}
    error = {"kind": outcome.error.kind, "field": outcome.error.field, "reason": outcome.error.reason}
    return {"index": outcome.index, "event_id": outcome.event_id, "status": "rejected", "error": error}


def build_response(outcomes: Sequence[Outcome], request_id: str = "") -> tuple[int, dict[str, Any]]:
    """(status, body): 200 every item accepted, 207 some rejected, 422 all rejected (also an error body).
    ``request_id`` names the request in the dead letters' origins (``http:<producer>/<request id>#<index>``)."""
    accepted = sum(isinstance(outcome, Accepted) for outcome in outcomes)
    rejected = len(outcomes) - accepted
    body: dict[str, Any] = {
        "request_id": request_id,
        "accepted": accepted,
        "rejected": rejected,
        "results": [item_result(outcome) for outcome in outcomes],
    }
    if not rejected:
        return 200, body
    if accepted:
        return 207, body
    noun = "the event was" if rejected == 1 else f"all {rejected} events were"
    return 422, {**error_body("rejected", f"{noun} rejected; see results"), **body}
