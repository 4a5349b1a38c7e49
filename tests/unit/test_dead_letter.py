"""The dead-letter contract every way in shares: origins, truncation, topic messages and back."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from pingan.dead_letter import (
    MAX_REASON_BYTES,
    DeadLetter,
    file_origin,
    from_message,
    http_origin,
    parse_origin,
    to_message,
    truncated_for_broker,
)
from pingan.dead_letter_sink import new_rows
from pingan.errors import InvalidEvent
from pingan.store import dead_letters

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("origin", "key", "round_trips"),
    [
        ("t1.events/3/1234", ("t1.events", 3, 1234), True),
        ("file:/var/cad/export 2.jsonl@98765", ("file:/var/cad/export 2.jsonl", 0, 98765), True),
        ("http:cad/7f3a#2", ("http:cad/7f3a", 0, 2), True),
        ("http:cad/a#b#12", ("http:cad/a#b", 0, 12), True),
        ("something else", ("something else", 0, 0), False),
        # numbers no key column holds: kept as text, so the row can always be stored
        ("t.events/70000/1", ("t.events/70000/1", 0, 0), False),
        ("file:/x@99999999999999999999", ("file:/x@99999999999999999999", 0, 0), False),
    ],
)
def test_an_origin_is_its_key_and_back(origin: str, key: tuple[str, int, int], round_trips: bool) -> None:
    assert parse_origin(origin) == key
    letter = DeadLetter(*key, NOW, "bad_json", "", "no", b"x")
    assert (letter.origin == origin) is round_trips


def test_origin_builders() -> None:
    assert file_origin("/a/b.csv", 10) == "file:/a/b.csv@10"
    assert http_origin("cad/r1", 0) == "http:cad/r1#0"


def test_truncated_for_broker_keeps_the_start_the_size_and_the_hash() -> None:
    raw = bytes(range(256)) * 10
    kept = truncated_for_broker(raw, 100)
    assert (kept.raw, kept.size, kept.truncated) == (raw[:100], 2560, True)
    assert kept.sha256 == hashlib.sha256(raw).hexdigest()
    whole = truncated_for_broker(b"abc", 100)
    assert (whole.raw, whole.size, whole.truncated) == (b"abc", 3, False)


def test_of_cuts_a_large_record_and_says_so() -> None:
    raw = b"y" * 1000
    letter = DeadLetter.of(InvalidEvent("oversize", "too big"), raw, origin="http:p/r#4", received_at=NOW,
                           source="gateway", feed="call110", max_bytes=10)  # fmt: skip
    assert (letter.topic, letter.partition, letter.offset) == ("http:p/r", 0, 4)
    assert (letter.raw, letter.raw_size, letter.truncated) == (b"y" * 10, 1000, True)
    assert letter.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert letter.reason == "too big (the record is 1000 bytes; its first 10 are kept)"


def test_a_message_carries_every_field_and_reads_back_the_same() -> None:
    letter = DeadLetter.of(
        InvalidEvent("unknown_place", "不在地址表 " + "x" * 3000, "address"), b'{"a": 1}', origin="file:/x.jsonl@42",
        received_at=NOW, source="tailer", feed="electrical_fire", adapter="pingan.producers.adapters.device:map_record",
        redacted=True,
    )  # fmt: skip
    message = to_message(letter)
    headers = dict(message.headers)
    assert message.value == b'{"a": 1}'
    assert len(headers["pingan-error-reason"]) <= MAX_REASON_BYTES
    headers["pingan-error-reason"].decode()  # cut on a character boundary
    back = from_message(message.value, message.headers, topic="t.dead-letters", partition=1, offset=7, timestamp_ms=5)
    assert back == DeadLetter(
        "file:/x.jsonl", 0, 42, NOW, "unknown_place", "address", headers["pingan-error-reason"].decode(), b'{"a": 1}',
        source="tailer", feed="electrical_fire", adapter="pingan.producers.adapters.device:map_record", raw_size=8,
        raw_sha256=letter.raw_sha256, redacted=True,
    )  # fmt: skip


def test_a_truncated_copy_keeps_the_original_size_through_the_topic() -> None:
    letter = DeadLetter.of(InvalidEvent("oversize", "big"), b"z" * 500, origin="a.events/0/1", received_at=NOW,
                           source="worker", max_bytes=100)  # fmt: skip
    back = from_message(*(lambda m: (m.value, m.headers))(to_message(letter)), topic="d", partition=0, offset=0,
                        timestamp_ms=None)  # fmt: skip
    assert (len(back.raw), back.raw_size, back.truncated) == (100, 500, True)
    assert back.raw_sha256 == hashlib.sha256(b"z" * 500).hexdigest()
    # ... and a message itself is capped too, for a letter made with a larger limit
    big = DeadLetter("a.events", 0, 2, NOW, "bad_json", "", "no", b"q" * 300)
    message = to_message(big, max_bytes=50)
    assert len(message.value) == 50 and dict(message.headers)["pingan-raw-size"] == b"300"


def test_a_message_without_headers_still_becomes_a_row_at_its_own_position() -> None:
    back = from_message(b"{bad", [], topic="t.dead-letters", partition=2, offset=9, timestamp_ms=1_700_000_000_000)
    assert (back.topic, back.partition, back.offset, back.kind, back.source) == (
        "t.dead-letters", 2, 9, "unknown", "worker"
    )  # fmt: skip
    assert back.received_at == datetime.fromtimestamp(1_700_000_000, UTC)
    odd = from_message(None, [("pingan-received-at", b"99999999999999999999")], topic="d", partition=0, offset=0,
                       timestamp_ms=None)  # fmt: skip
    assert odd.raw == b"" and odd.received_at == datetime.fromtimestamp(0, UTC)


def test_the_row_takes_the_storage_time_for_a_received_at_clickhouse_cannot_hold() -> None:
    """issue 8: a record timestamp of 1e13 ms made the dead-letter insert fail for ever."""
    letter = DeadLetter("t.events", 0, 1, datetime(2286, 11, 20, tzinfo=UTC), "bad_json", "", "no", b"{bad")
    row = dict(zip(dead_letters.COLUMNS, dead_letters.row(letter, ingested_at=NOW), strict=True))
    assert row["received_at"] == int(NOW.timestamp())
    assert (row["origin"], row["source"], row["raw_size"], row["replayed_at"]) == ("t.events/0/1", "worker", 4, 0)


def test_the_sink_stores_each_origin_once_and_skips_stored_ones() -> None:
    a = DeadLetter("t.events", 0, 1, NOW, "bad_json", "", "no", b"1")
    b = DeadLetter("file:/x", 0, 5, NOW, "bad_json", "", "no", b"2")
    rows = new_rows([a, b, a], {("file:/x", 0, 5)}, ingested_at=NOW)
    assert [r[:3] for r in rows] == [("t.events", 0, 1)]
