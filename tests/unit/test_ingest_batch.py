"""The gateway's pure part: body shapes, per-item checks with the worker's rules, dead-letter headers and
the per-item response."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from pingan.api.errors import ApiError
from pingan.api.ingest_batch import (
    Accepted,
    ItemRules,
    Rejected,
    build_response,
    check_item,
    check_items,
    split_body,
)
from pingan.api.ingest_models import IngestRejected, IngestResponse
from pingan.errors import InvalidEvent
from pingan.feeds import FeedRules, build_feeds
from pingan.schemas.envelope import parse_event
from pingan.schemas.payloads import SOURCE_PAYLOADS
from tests.support.events import call110, camera

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
AT = NOW - timedelta(minutes=3)


class Grids:
    """G1 and G2 exist; every point with 116 < lon < 117 lies in G2."""

    def get(self, grid_id: str) -> object | None:
        return object() if grid_id in ("G1", "G2") else None

    def locate(self, lon: float, lat: float) -> object | None:
        return SimpleNamespace(grid_id="G2") if 116 < lon < 117 else None


RULES = ItemRules.of(Grids(), SOURCE_PAYLOADS)


def _refused(body: bytes, max_batch: int = 10) -> ApiError:
    with pytest.raises(ApiError) as caught:
        split_body(body, max_batch)
    return caught.value


# --- body shapes ------------------------------------------------------------------------------------------


def test_a_single_event_keeps_its_exact_bytes_and_a_batch_its_items() -> None:
    body = b'{"event_id": "a",  "severity": 2}'
    assert split_body(body, 10) == ([{"event_id": "a", "severity": 2}], body)
    assert split_body(b'{"events": [{"a": 1}, 2, null]}', 3) == ([{"a": 1}, 2, None], None)


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b'{"events": [', 400, "bad_json", None),
        (b"", 400, "bad_json", None),
        (b"[{}]", 422, "invalid_body", None),
        (b'"event"', 422, "invalid_body", None),
        (b'{"events": [{}], "producer": "x"}', 422, "invalid_body", "events"),
        (b'{"events": {"event_id": "a"}}', 422, "invalid_body", "events"),
        (b'{"events": []}', 422, "invalid_body", "events"),
        (b'{"events": [1, 2, 3, 4]}', 413, "too_many_events", "events"),
    ],
)
def test_bodies_of_neither_shape_refuse_the_whole_request(
    body: bytes, status: int, code: str, field: str | None
) -> None:
    error = _refused(body, max_batch=3)
    assert (error.status, error.code, error.field) == (status, code, field)


def test_a_json_array_is_pointed_at_the_batch_shape() -> None:
    assert '{"events": [...]}' in _refused(b"[]").message


# --- items ------------------------------------------------------------------------------------------------


def test_a_valid_item_is_keyed_by_grid_and_its_value_is_what_the_worker_accepts() -> None:
    item = call110("e-1", "G1", AT)
    outcome = check_item(0, item, source="call110", now=NOW, rules=RULES)
    assert isinstance(outcome, Accepted)
    assert (outcome.index, outcome.event_id, outcome.key) == (0, "e-1", b"G1")
    event = parse_event(outcome.value, now=NOW)
    assert event.receive_time == NOW  # the gateway is where the event reached the system
    assert orjson.loads(outcome.value)["event_time"] == item["event_time"]


def test_source_is_filled_from_the_path_and_a_different_one_is_refused() -> None:
    item = call110("e-1", "G1", AT)
    del item["source"]
    outcome = check_item(3, item, source="call110", now=NOW, rules=RULES)
    assert isinstance(outcome, Accepted) and orjson.loads(outcome.value)["source"] == "call110"

    other = camera("e-2", "G1", AT)
    refused = check_item(4, other, source="call110", now=NOW, rules=RULES)
    assert isinstance(refused, Rejected)
    assert (refused.index, refused.event_id, refused.error.kind, refused.error.field) == (
        4, "e-2", "source_mismatch", "source"
    )  # fmt: skip
    assert orjson.loads(refused.raw) == other  # the dead letter is the item as sent


def test_a_location_only_item_is_keyed_by_the_grid_that_contains_it() -> None:
    item = call110("e-1", "G1", AT)
    del item["grid_id"]
    item["location"] = {"lon": 116.4, "lat": 39.9}
    outcome = check_item(0, item, source="call110", now=NOW, rules=RULES)
    assert isinstance(outcome, Accepted) and outcome.key == b"G2"
    assert "grid_id" not in orjson.loads(outcome.value)  # the gateway does not rewrite the event


def _rejected(item: Any, **rules: Any) -> InvalidEvent:
    outcome = check_item(0, item, source="call110", now=NOW, rules=ItemRules.of(Grids(), **{
                         "payload_models": SOURCE_PAYLOADS, **rules}))  # fmt: skip
    assert isinstance(outcome, Rejected), outcome
    return outcome.error


def test_items_are_judged_by_the_workers_rules() -> None:
    assert _rejected({**call110("e", "G1", AT), "severity": 9}).kind == "out_of_range"
    assert _rejected({**call110("e", "G1", AT), "grid_id": "G404"}).kind == "unknown_grid"
    located = {k: v for k, v in call110("e", "G1", AT).items() if k != "grid_id"} | {"location": {"lon": 1, "lat": 1}}
    assert _rejected(located).kind == "outside_grids"
    assert _rejected({k: v for k, v in call110("e", "G1", AT).items() if k != "event_id"}).field == "event_id"
    assert _rejected(call110("e", "G1", NOW + timedelta(hours=1))).kind == "future_timestamp"
    assert _rejected(call110("e", "G1", AT), max_event_bytes=100).kind == "oversize"
    assert _rejected(["not", "an", "object"]).kind == "bad_json"
    assert _rejected(call110("e", "G1", AT), payload_models={"camera": SOURCE_PAYLOADS["camera"]}).kind == (
        "unknown_source"
    )


def test_a_single_event_sent_complete_is_produced_byte_for_byte() -> None:
    item = {**call110("e-1", "G1", AT), "receive_time": AT.isoformat()}
    body = orjson.dumps(item, option=orjson.OPT_INDENT_2)
    items, raw = split_body(body, 10)
    [outcome] = check_items(items, source="call110", now=NOW, rules=RULES, raw=raw)
    assert isinstance(outcome, Accepted) and outcome.value == body

    broken = orjson.dumps({**item, "severity": 0}, option=orjson.OPT_INDENT_2)
    items, raw = split_body(broken, 10)
    [refused] = check_items(items, source="call110", now=NOW, rules=RULES, raw=raw)
    assert isinstance(refused, Rejected) and refused.raw == broken


def test_check_items_keeps_batch_order_and_indexes() -> None:
    items = [call110("a", "G1", AT), {"event_id": "b"}, call110("c", "G2", AT)]
    outcomes = check_items(items, source="call110", now=NOW, rules=RULES)
    assert [(o.index, o.event_id, type(o).__name__) for o in outcomes] == [
        (0, "a", "Accepted"), (1, "b", "Rejected"), (2, "c", "Accepted")
    ]  # fmt: skip


def test_the_feeds_type_table_and_a_whole_severity_are_checked_as_everywhere() -> None:
    feeds = build_feeds({"call110": {"types": {"刑事": {"type": "criminal", "severity": 4}}}}, [])
    rules = ItemRules(Grids(), FeedRules.of(feeds))
    ok = check_item(0, call110("a", "G1", AT), source="call110", now=NOW, rules=rules)
    assert isinstance(ok, Accepted)
    gas = check_item(0, {**call110("b", "G1", AT), "type": "gas_leak"}, source="call110", now=NOW, rules=rules)
    assert isinstance(gas, Rejected) and (gas.error.kind, gas.error.field) == ("unknown_type", "type")
    assert "criminal" in gas.error.reason
    text = check_item(0, {**call110("c", "G1", AT), "severity": "4"}, source="call110", now=NOW, rules=rules)
    assert isinstance(text, Rejected) and (text.error.kind, text.error.field) == ("invalid_field", "severity")
    assert "'4'" in text.error.reason


# --- the response -----------------------------------------------------------------------------------------


def _outcomes(pattern: str) -> list[Accepted | Rejected]:
    error = InvalidEvent("out_of_range", "too high", "severity")
    return [
        Accepted(i, f"e{i}", b"G1", b"{}") if c == "a" else Rejected(i, None if i == 0 else f"e{i}", error, b"{}")
        for i, c in enumerate(pattern)
    ]


def test_all_accepted_is_200_with_every_result() -> None:
    status, body = build_response(_outcomes("aa"), "r-1")
    assert status == 200
    assert body == {"request_id": "r-1", "accepted": 2, "rejected": 0, "results": [
        {"index": 0, "event_id": "e0", "status": "accepted"}, {"index": 1, "event_id": "e1", "status": "accepted"}
    ]}  # fmt: skip
    IngestResponse.model_validate(body)


def test_some_rejected_is_207_with_the_reason_per_item() -> None:
    status, body = build_response(_outcomes("ara"))
    assert status == 207
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["results"][1] == {
        "index": 1, "event_id": "e1", "status": "rejected",
        "error": {"kind": "out_of_range", "field": "severity", "reason": "too high"},
    }  # fmt: skip
    assert "error" not in body
    IngestResponse.model_validate(body)


def test_all_rejected_is_422_with_the_error_body_and_the_results() -> None:
    status, body = build_response(_outcomes("rr"))
    assert status == 422
    assert body["error"] == {"code": "rejected", "message": "all 2 events were rejected; see results"}
    assert (body["accepted"], body["rejected"], body["results"][0]["event_id"]) == (0, 2, None)
    IngestRejected.model_validate(body)
    assert build_response(_outcomes("r"))[1]["error"]["message"] == "the event was rejected; see results"
