"""The one-pass check of a batch record's envelopes (EnvelopeReader, FeedRules.validate_all) answers exactly as
checking each envelope alone (FeedRules.validate, the contract): the same events, the same refusals with the
same kind, field and reason, and it never raises for what the envelopes hold."""

from __future__ import annotations

from datetime import timedelta
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, model_validator

from pingan.errors import InvalidEvent
from pingan.feeds import FeedRules
from pingan.schemas.batch import encode_batch
from pingan.schemas.envelope import EnvelopeReader, Event
from pingan.schemas.payloads import SOURCE_PAYLOADS
from pingan.streams.pipeline import PipelineConfig, Record, process_batch
from pingan.streams.windows import PartitionState
from tests.unit.test_fuzz_pipeline import FUZZ, NOW, envelopes
from tests.unit.test_pipeline import GRIDS, INDEX, SPEC, T0, call

# The built-in feeds, a type table on call110 (so unknown_type is among the answers) and the default limits.
RULES = FeedRules(MappingProxyType(dict(SOURCE_PAYLOADS)), MappingProxyType({"call110": frozenset({"criminal"})}))


def one_by_one(rules: FeedRules, raws: list[bytes]) -> list[Event | tuple[str, str | None, str]]:
    answers: list[Event | tuple[str, str | None, str]] = []
    for raw in raws:
        try:
            answers.append(rules.validate(raw, now=NOW))
        except InvalidEvent as exc:
            answers.append((exc.kind, exc.field, exc.reason))
    return answers


def in_one_pass(rules: FeedRules, documents: list[Any]) -> list[Event | tuple[str, str | None, str]]:
    raws = [orjson.dumps(document) for document in documents]
    return [
        answer if isinstance(answer, Event) else (answer.kind, answer.field, answer.reason)
        for answer in rules.validate_all(raws, documents, now=NOW)
    ]


def encodable(document: Any) -> bool:
    try:
        orjson.dumps(document)
    except orjson.JSONEncodeError:  # an int past 64 bits: a batch record decoded by orjson never holds one
        return False
    return True


@FUZZ
@given(st.lists(envelopes().filter(encodable), min_size=1, max_size=12))
def test_one_pass_answers_each_envelope_as_checking_it_alone(documents: list[dict[str, Any]]) -> None:
    raws = [orjson.dumps(document) for document in documents]
    assert in_one_pass(RULES, documents) == one_by_one(RULES, raws)


def test_one_pass_accepts_the_valid_and_refuses_each_bad_one_with_its_own_reason() -> None:
    valid = call("a", "G1", T0)
    documents: list[Any] = [
        valid,
        {**valid, "event_id": "b", "severity": "3"},  # strict severity
        {**valid, "event_id": "c", "source": "drone"},  # unknown source
        {**valid, "event_id": "d", "type": "dispute"},  # not in call110's type table
        {**valid, "event_id": "e", "event_time": (NOW + timedelta(hours=1)).isoformat()},  # future
        {k: v for k, v in valid.items() if k != "grid_id"} | {"event_id": "f"},  # no place
        {**valid, "event_id": "g", "payload": {**valid["payload"], "priority": 9}},  # payload out of range
        "not an object",
        {**valid, "event_id": "h"},
    ]
    answers = in_one_pass(RULES, documents)
    assert [a.event_id if isinstance(a, Event) else a[0] for a in answers] == [
        "a", "invalid_field", "unknown_source", "unknown_type", "future_timestamp", "missing_field",
        "out_of_range", "bad_json", "h",
    ]  # fmt: skip
    assert answers == one_by_one(RULES, [orjson.dumps(document) for document in documents])


def test_an_envelope_over_the_size_limit_is_refused_in_one_pass_too() -> None:
    rules = FeedRules(MappingProxyType(dict(SOURCE_PAYLOADS)), {}, max_bytes=400)
    documents = [call("a", "G1", T0), call("b", "G1", T0, note="x" * 400)]
    answers = in_one_pass(rules, documents)
    assert isinstance(answers[0], Event)
    assert answers[1][0] == "oversize"


class LenientPayload(BaseModel):
    """A plugin's payload model that makes an object of a bare string (parse_event's envelope refuses one)."""

    model_config = ConfigDict(extra="forbid")
    note: str

    @model_validator(mode="before")
    @classmethod
    def from_string(cls, value: Any) -> Any:
        return {"note": value} if isinstance(value, str) else value


@pytest.mark.parametrize("payload", ["just text", {"note": "an object"}])
def test_a_payload_that_is_not_an_object_is_refused_however_lenient_its_model(payload: Any) -> None:
    rules = FeedRules(MappingProxyType({"notes": LenientPayload}), {})
    document = {"event_id": "n1", "source": "notes", "type": "note", "severity": 1, "event_time": T0.isoformat(),
                "grid_id": "G1", "payload": payload}  # fmt: skip
    (answer,) = in_one_pass(rules, [document])
    assert answer == one_by_one(rules, [orjson.dumps(document)])[0]
    assert isinstance(answer, Event) == isinstance(payload, dict)


def test_a_reader_without_feeds_leaves_every_envelope_to_parse_event() -> None:
    reader = EnvelopeReader({})
    assert reader.events([call("a", "G1", T0), {}], now=NOW, max_future=timedelta(minutes=5)) == [None, None]


def test_a_bug_in_the_one_pass_costs_no_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the one pass")

    monkeypatch.setattr(FeedRules, "validate_all", broken)
    envelopes = [orjson.dumps(call("a", "G1", T0)), orjson.dumps({**call("b", "G1", T0), "severity": "3"})]
    record = Record("events", 0, 0, None, encode_batch(envelopes), None)
    result = process_batch([record], PartitionState(SPEC), GRIDS, PipelineConfig(index=INDEX, partitions=1), now=NOW)
    assert [event.event_id for event, _, _ in result.stored] == ["a"]
    assert [(letter.kind, letter.origin) for letter in result.dead_letters] == [("invalid_field", "events/0/0#1")]
