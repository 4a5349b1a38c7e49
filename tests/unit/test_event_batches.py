"""Event batch records (schemas/batch.py): the same results as one event per record, per-envelope dead letters,
exact replay. No I/O."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from pingan.dead_letter import parse_origin
from pingan.schemas.batch import MAX_BATCH_EVENTS, batched, encode_batch, split_batch
from pingan.streams.app import chunked
from pingan.streams.pipeline import ITEM_SLOTS, Record
from pingan.streams.windows import PartitionState
from tests.unit.test_pipeline import SPEC, T0, _decided, _latest_rows, _stream, call, records, run


def as_batches(stream: list[Record], per_record: int) -> list[Record]:
    """The same envelopes, ``per_record`` to a batch record, on consecutive offsets. A value that is not a
    JSON object (the stream's garbage) goes in as a JSON string: a bad envelope inside a good batch."""
    out = []
    for offset, i in enumerate(range(0, len(stream), per_record)):
        items = []
        for record in stream[i : i + per_record]:
            try:
                orjson.loads(record.value)
                items.append(record.value)
            except orjson.JSONDecodeError:
                items.append(orjson.dumps(record.value.decode()))
        out.append(Record("events", 0, offset, None, encode_batch(items), None))
    return out


def _replay(stream: list[Record], size: int) -> list:
    state = PartitionState(SPEC)
    now = T0 + timedelta(hours=6)
    return [run(stream[i : i + size], state, now=now)[0] for i in range(0, len(stream), size)]


def _counts(state: PartitionState) -> tuple:
    return {g: {s: b.counts for s, b in bs.items()} for g, bs in state.buckets.items()}, state.watermark_ms


def _stored(results) -> list[str]:
    return sorted(e.event_id for r in results for e, _, late in r.stored if not late)


@pytest.mark.parametrize(("per_record", "records_per_batch"), [(1, 50), (7, 3), (50, 1), (400, 1), (50, 100)])
def test_batch_records_decide_what_single_records_do(per_record: int, records_per_batch: int) -> None:
    stream = _stream(400)
    single = _replay(stream, 20)
    batched_results = _replay(as_batches(stream, per_record), records_per_batch)
    assert _decided(batched_results) == _decided(single)
    assert _decided(single)[1]  # alerts happened: the comparison is not of two empty logs
    assert _latest_rows(batched_results) == _latest_rows(single)
    assert _stored(batched_results) == _stored(single)
    # every bad envelope is a dead letter of its own; the batch's good ones are used
    assert sum(len(r.dead_letters) for r in batched_results) == sum(len(r.dead_letters) for r in single)
    assert sum(r.batches for r in batched_results) == len(as_batches(stream, per_record))


def test_a_bad_envelope_is_a_dead_letter_with_its_index_and_its_own_bytes() -> None:
    at = T0 + timedelta(minutes=1)
    good, bad = orjson.dumps(call("a", "G1", at)), orjson.dumps({**call("b", "G1", at), "severity": "high"})
    result, _ = run([Record("pingan.events", 0, 12, None, encode_batch([good, bad, good]), None)])
    [letter] = result.dead_letters
    assert (letter.origin, letter.kind, letter.field, letter.raw) == ("pingan.events/0/12#1", "invalid_field",
                                                                        "severity", bad)  # fmt: skip
    assert parse_origin(letter.origin) == ("pingan.events/0/12", 0, 1)
    # the first envelope counts; the third repeats its event id and counts once
    assert (result.applied, result.duplicates, [e.event_id for e, _, _ in result.stored]) == (1, 1, ["a", "a"])


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b'{"pingan_batch":1,"events":[', "bad_batch"),
        (b'{"pingan_batch":2,"events":[{}]}', "bad_batch"),
        (b'{"pingan_batch":1,"events":[]}', "bad_batch"),
        (b'{"pingan_batch":1,"events":{"a":1}}', "bad_batch"),
        (b'{"pingan_batch":1,"events":["' + b"x" * 1_000_000 + b'"]}', "oversize"),
    ],
)
def test_a_batch_record_that_cannot_be_read_is_one_dead_letter(value: bytes, kind: str) -> None:
    result, state = run([Record("pingan.events", 0, 3, None, value, None)])
    assert [(d.origin, d.kind) for d in result.dead_letters] == [("pingan.events/0/3", kind)]
    assert result.stored == [] and state.done_offset == 3  # kept, and the partition goes on


def test_a_crash_mid_stream_of_batch_records_replays_exactly() -> None:
    stream = as_batches(_stream(400), 9)
    uninterrupted = PartitionState(SPEC)
    expected = [run(stream[i : i + 5], uninterrupted)[0] for i in range(0, len(stream), 5)]
    live = PartitionState(SPEC)
    changelog: dict[str, bytes | None] = {}
    written = []
    for i in range(0, 20, 5):
        result, _ = run(stream[i : i + 5], live)
        changelog.update(result.checkpoint)
        written.append(result)
    crashed, _ = run(stream[20:27], live)  # its checkpoint never reached the changelog
    written.append(crashed)
    restored = PartitionState(SPEC)
    restored.restore((k, v) for k, v in changelog.items() if v is not None)
    written += [run(stream[i : i + 4], restored)[0] for i in range(20, len(stream), 4)]
    assert _counts(restored) == _counts(uninterrupted)
    assert _decided(written) == _decided(expected) and _latest_rows(written) == _latest_rows(expected)


def test_producers_group_envelopes_per_partition_in_order_within_limits() -> None:
    placed = [(i % 3 if i % 10 else None, 10) for i in range(40)]
    groups = batched(placed, max_events=5)
    assert all(len(indices) <= 5 for _, indices in groups)
    assert sorted(i for _, indices in groups for i in indices) == list(range(40))  # every one, once
    for partition in (0, 1, 2):
        mine = [i for p, indices in groups if p == partition for i in indices]
        assert mine == [i for i, (p, _) in enumerate(placed) if p == partition]  # in order
    assert [indices for p, indices in groups if p is None] == [[i] for i in range(0, 40, 10)]
    # a byte limit splits too, and each batch reads back as its envelopes
    values = [b'{"n":%d}' % i for i in range(30)]
    small = batched([(0, len(v)) for v in values], max_events=100, max_bytes=120)
    assert len(small) > 1
    encoded = [encode_batch([values[i] for i in indices]) for _, indices in small]
    assert all(len(record) <= 120 for record in encoded)
    assert [v for record in encoded for v in split_batch(record)] == values
    assert batched(placed, max_events=1) == [(p, [i]) for i, (p, _) in enumerate(placed)]


def test_every_envelope_of_the_largest_batch_has_a_position_of_its_own() -> None:
    assert ITEM_SLOTS > MAX_BATCH_EVENTS
    at = T0 + timedelta(minutes=1)
    envelopes = [orjson.dumps(call(f"e{i}", "G1", at)) for i in range(MAX_BATCH_EVENTS)]
    result, _ = run([Record("events", 0, 0, None, encode_batch(envelopes), None)])
    assert result.applied == MAX_BATCH_EVENTS


def test_records_of_one_event_still_work_next_to_batches() -> None:
    at = T0 + timedelta(minutes=1)
    single = records(call("a", "G1", at), call("b", "G2", at))
    batch = Record("events", 0, 2, None, encode_batch([orjson.dumps(call("c", "G1", at))]), None)
    result, state = run([*single, batch])
    assert [e.event_id for e, _, _ in result.stored] == ["a", "b", "c"]
    assert state.buckets["G1"][SPEC.bucket_start(at.timestamp())].events == 2


def test_a_take_of_batch_records_is_worked_in_rounds_of_bounded_bytes() -> None:
    values = [b"x" * n for n in (10, 10, 30, 5, 50, 0, 1)]
    taken = [Record("events", 0, i, None, v, None) for i, v in enumerate(values)]
    rounds = chunked(taken, 40)
    assert [[r.offset for r in chunk] for chunk in rounds] == [[0, 1], [2, 3], [4], [5, 6]]
    assert chunked([], 40) == [] and [len(c) for c in chunked(taken, 10_000)] == [7]
