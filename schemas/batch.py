"""The event batch record: many envelopes in one Kafka record, all for grids of one partition.

A record on the events topic is either one envelope (the contract any producer may use, see
``schemas/jsonschema/``) or a batch written by the project's own producers (simulator, gateway)::

    {"pingan_batch": 1, "events": [<envelope>, <envelope>, ...]}

``pingan_batch`` is the format's version and comes first, so the worker tells a batch from an envelope by
its first bytes. Each envelope in it is checked exactly as if it had come alone (size limit included); a
bad one becomes a dead letter of its own, with the origin ``topic/partition/offset#index``, and the others
are used. Why: the stream framework costs ~80 µs per record whatever the record holds, which capped a
worker fed one event per record at ~12k events/s on the project's machines (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from pingan.errors import InvalidEvent
from pingan.partitioning import partition_for_key

BATCH_VERSION = 1
BATCH_PREFIX = b'{"pingan_batch":'
_OPENING = b'{"pingan_batch":%d,"events":[' % BATCH_VERSION
# At most this many envelopes, and this many bytes (Kafka's default largest message is 1 MiB), in one batch.
MAX_BATCH_EVENTS = 2000
MAX_BATCH_BYTES = 1_000_000


def is_batch(value: bytes) -> bool:
    return value.startswith(BATCH_PREFIX)


def encode_batch(envelopes: Sequence[bytes]) -> bytes:
    """A batch record of already encoded envelopes (compact JSON objects), in order."""
    if not 0 < len(envelopes) <= MAX_BATCH_EVENTS:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_EVENTS} envelopes, not {len(envelopes)}")
    return _OPENING + b",".join(envelopes) + b"]}"


def split_batch(value: bytes) -> list[bytes]:
    """The envelopes of a batch record, each encoded alone; InvalidEvent("bad_batch") if it is not one."""
    return [orjson.dumps(document) for document in batch_documents(value)]


def batch_documents(value: bytes) -> list[Any]:
    """The envelopes of a batch record as decoded JSON (any JSON value: each is checked as an envelope later);
    InvalidEvent("bad_batch") if it is not a batch record. ``orjson.dumps`` of one is its bytes alone."""
    if len(value) > MAX_BATCH_BYTES:
        raise InvalidEvent("oversize", f"batch record is {len(value)} bytes, the limit is {MAX_BATCH_BYTES}")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_batch", f"batch record is not JSON: {exc}") from None
    version = document.get("pingan_batch") if isinstance(document, dict) else None
    if version != BATCH_VERSION:
        raise InvalidEvent("bad_batch", f"unknown batch format {version!r} (this worker reads {BATCH_VERSION})")
    events = document.get("events")
    if not isinstance(events, list) or not 0 < len(events) <= MAX_BATCH_EVENTS:
        count = len(events) if isinstance(events, list) else type(events).__name__
        raise InvalidEvent("bad_batch", f"a batch's events must be a list of 1 to {MAX_BATCH_EVENTS}, got {count}")
    return events


def records_to_send(
    events: Sequence[tuple[bytes | None, bytes]], *, partitions: int, max_events: int
) -> list[tuple[bytes | None, int | None, bytes, int]]:
    """What a producer sends for encoded events ``(grid key, envelope)``: ``(key, partition, value, events
    carried)`` per record. One event alone stays a plain envelope keyed by its grid (partition None: the
    default partitioner, which agrees with :func:`pingan.partitioning.partition_for_key`); the events of one
    partition's grids go together as event batch records to that partition."""
    placed = [(None if key is None else partition_for_key(key, partitions), len(value)) for key, value in events]
    out: list[tuple[bytes | None, int | None, bytes, int]] = []
    for partition, indices in batched(placed, max_events=max_events):
        if len(indices) == 1:
            key, value = events[indices[0]]
            out.append((key, None, value, 1))
        else:
            out.append((None, partition, encode_batch([events[i][1] for i in indices]), len(indices)))
    return out


def batched(
    placed: Sequence[tuple[int | None, int]], *, max_events: int, max_bytes: int = MAX_BATCH_BYTES
) -> list[tuple[int | None, list[int]]]:
    """Group envelopes, given as ``(partition, encoded size)``, into batches per partition: lists of their
    indices, in order within each partition, at most ``max_events`` envelopes and ``max_bytes`` encoded bytes
    each. An envelope without a partition (no grid found for it) is alone, as is every one for
    ``max_events`` 1."""
    out: list[tuple[int | None, list[int]]] = []
    open_batches: dict[int, tuple[list[int], int]] = {}  # partition -> (indices, encoded size so far)
    limit = min(max_events, MAX_BATCH_EVENTS)
    overhead = len(_OPENING) + 2
    for index, (partition, size) in enumerate(placed):
        if partition is None or limit <= 1 or size + overhead > max_bytes:
            out.append((partition, [index]))
            continue
        indices, total = open_batches.get(partition, ([], overhead))
        if indices and (len(indices) >= limit or total + size + 1 > max_bytes):
            out.append((partition, indices))
            indices, total = [], overhead
        indices.append(index)
        open_batches[partition] = (indices, total + size + 1)
    out.extend((partition, indices) for partition, (indices, _) in open_batches.items())
    return out
