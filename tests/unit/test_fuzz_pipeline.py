"""Fuzz tier: arbitrary envelopes and bytes through the pipeline and the sink's row builders.

Whatever arrives, the worker must neither raise nor build a row ClickHouse would refuse: every record
becomes an event, a dead letter with a reason, or a reroute, and every row fits its column types (read from
the migrations). Bounded: a few hundred examples per property, seconds in all.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pingan.store import alerts, dead_letters, events, risk, windows
from pingan.streams.pipeline import PipelineConfig, Record, heartbeat_record, process_batch
from pingan.streams.windows import PartitionState
from tests.support.schema import row_problems
from tests.unit.test_pipeline import GRIDS, INDEX, SPEC, T0, call

NOW = T0 + timedelta(hours=2)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values at and past every edge the envelope and payloads have, and the JSON oddities around them.
edgy_ints = st.sampled_from([0, 1, 3, 5, 6, -1, 2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**30])
edgy_numbers = st.one_of(
    edgy_ints, st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 1e-320, 0.5])
)
offsets = st.sampled_from([UTC, *(timezone(timedelta(hours=h)) for h in (8, -12, 14))])
times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets),
    st.datetimes(min_value=datetime(2026, 11, 23, 6), max_value=datetime(2026, 11, 23, 11), timezones=offsets),
).map(lambda d: d.isoformat())
time_values = st.one_of(times, edgy_ints, st.sampled_from(["", "now", "2026-11-23", "2026-11-23T08:00:00", None]))
texts = st.one_of(st.text(max_size=40), st.sampled_from(["", "x" * 129, "\u0000", "网格", "a|b"]))
scalars = st.one_of(st.none(), st.booleans(), edgy_numbers, texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12
)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A call110 envelope near the valid one, with some fields replaced by edge values or removed."""
    at = T0 + timedelta(minutes=draw(st.integers(0, 150)), seconds=draw(st.integers(0, 59)))
    event_id = draw(st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=130))
    document: dict[str, Any] = call(event_id, draw(st.sampled_from(["G1", "G2", "G3", "G404"])), at)
    fields = {
        "event_id": texts, "source": st.sampled_from(["call110", "camera", "drone", "", "CALL110"]),
        "type": texts, "severity": st.one_of(edgy_ints, scalars), "event_time": time_values,
        "receive_time": time_values, "grid_id": st.one_of(texts, st.none()), "device_id": texts,
        "location": st.one_of(st.none(), st.fixed_dictionaries({"lon": edgy_numbers, "lat": edgy_numbers})),
        "schema_version": st.one_of(edgy_ints, scalars),
        "payload": st.one_of(json_values, st.just(document["payload"])),
    }  # fmt: skip
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        document[name] = draw(fields[name])
    for name in draw(st.lists(st.sampled_from(sorted(document)), max_size=1)):
        document.pop(name, None)
    for name in ("priority", "reported_at", "category"):
        if draw(st.booleans()) and isinstance(document.get("payload"), dict):
            document["payload"] = {**document["payload"], name: draw(json_values)}
    return document


def _encoded(document: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # an int past 64 bits: JSON has no limit, so write it anyway
        return json.dumps(document, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


# Records too big to print in a failure report are named, and built in the test.
ODD_RECORDS = {
    "empty": b"", "null": b"null", "array": b"[]", "string": b'"x"', "object": b"{}", "bad_utf8": b"\xff\xfe{",
    "deep_objects": b'{"a":' * 5000 + b"1" + b"}" * 5000, "deep_arrays": b"[" * 100_000,
    "long_number": b'{"a":' + b"1" * 400 + b"}", "oversize": b"x" * 70_000,
    "oversize_envelope": b'{"event_id":"a","source":"call110"}' + b" " * 70_000,
    "heartbeat_cut": heartbeat_record(5)[:-1], "heartbeat_future": heartbeat_record(10**15),
    "heartbeat_epoch": heartbeat_record(0), "heartbeat": heartbeat_record(int(T0.timestamp() * 1000)),
    "heartbeat_float": b'{"heartbeat_ms":1e9}',
}  # fmt: skip
raw_values = st.one_of(envelopes().map(_encoded), st.binary(max_size=300), st.sampled_from(sorted(ODD_RECORDS)))
record_timestamps = st.one_of(st.none(), st.sampled_from([-1, 0, 10**13, 10**16, 2**63 - 1, 946684799999]),
                              st.integers(int(T0.timestamp() * 1000), int(NOW.timestamp() * 1000)))  # fmt: skip


def _check_rows(result) -> None:
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)
    problems = []
    for event, record, late in result.stored:
        row = events.row(event, partition=record.partition, offset=record.offset, late=late, ingested_at=at)
        problems += row_problems("events", events.COLUMNS, row)
    for letter in result.dead_letters:
        assert letter.reason and letter.kind
        problems += row_problems("dead_letters", dead_letters.COLUMNS, dead_letters.row(letter, ingested_at=at))
    problems += [p for w in result.window_rows for p in row_problems("grid_windows", windows.COLUMNS, windows.row(w))]
    for update in (*result.risk_updates, *result.live_updates):
        problems += row_problems("risk_updates", risk.COLUMNS, risk.row(update))
        orjson.loads(update.to_json())
    for alert in result.alerts:
        problems += row_problems("alerts", alerts.COLUMNS, alerts.row(alert))
    assert not problems, problems


@FUZZ
@given(st.lists(st.tuples(raw_values, record_timestamps), min_size=1, max_size=12))
def test_any_records_become_events_or_dead_letters_and_every_row_fits_its_table(batch) -> None:
    good = [(orjson.dumps(call(f"ok{i}", "G1", T0 + timedelta(minutes=i))), None) for i in range(2)]
    values = [(ODD_RECORDS.get(value, value) if isinstance(value, str) else value, ts) for value, ts in batch]
    records = [Record("events", 0, i, None, value, ts) for i, (value, ts) in enumerate([*good, *values, *good])]
    state = PartitionState(SPEC)
    result = process_batch(records, state, GRIDS, PipelineConfig(index=INDEX, partitions=1), now=NOW)
    accounted = len(result.stored) + len(result.dead_letters) + len(result.reroutes) + result.heartbeats
    assert accounted == len(records)
    assert {e.event_id for e, _, _ in result.stored} >= {"ok0", "ok1"}
    _check_rows(result)
    # and the state it leaves restores from its own checkpoint
    restored = PartitionState(SPEC)
    restored.restore((k, v) for k, v in result.checkpoint if v is not None)
    assert restored.buckets.keys() == state.buckets.keys() and restored.done_offset == state.done_offset


@FUZZ
@given(envelopes(), record_timestamps)
def test_an_envelope_is_stored_only_with_times_clickhouse_holds(document, timestamp) -> None:
    record = Record("events", 0, 0, None, _encoded(document), timestamp)
    result = process_batch([record], PartitionState(SPEC), GRIDS, PipelineConfig(index=INDEX, partitions=1), now=NOW)
    assert len(result.stored) + len(result.dead_letters) == 1
    _check_rows(result)
    for event, _, _ in result.stored:
        assert datetime(2000, 1, 1, tzinfo=UTC) <= event.event_time <= NOW + timedelta(minutes=5)
        assert datetime(2000, 1, 1, tzinfo=UTC) <= event.receive_time <= NOW + timedelta(minutes=5)
