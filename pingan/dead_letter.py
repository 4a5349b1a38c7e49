"""The dead letter: one record that could not become an event, wherever it came in. Pure, no I/O.

Every way in (the worker reading the events topic, the ingest gateway, the webhooks, the file tailer) keeps a
bad record as one :class:`DeadLetter`, puts it on the dead-letter topic with :func:`to_message`, and the
dead-letter sink (``pingan/dead_letter_sink.py``) turns each message back into the same record with
:func:`from_message` and stores it in the ``dead_letters`` table (``pingan/store/dead_letters.py``).

**Origin.** Where the record came from is three values, which are also the table's key (so a dead letter
written twice, by the worker and the sink, or after a crash, is stored once):

============ ====================================== ================ ======================================
way in       ``topic``                              ``partition``    ``offset``
============ ====================================== ================ ======================================
Kafka        the topic (``pingan.events``)          the partition    the offset
Kafka batch  ``<topic>/<partition>/<offset>``       0                the envelope's index in the batch
file         ``file:<absolute path>``               0                the line's byte offset
HTTP         ``http:<producer>/<request id>``       0                the item's index in the request body
============ ====================================== ================ ======================================

Kafka topic names cannot contain ``:`` or ``/``, so the four never clash. :attr:`DeadLetter.origin` writes them
as one string (``pingan.events/3/1234``, ``pingan.events/3/1234#7`` for an envelope of an event batch record,
see ``schemas/batch.py``, ``file:/var/cad/x.jsonl@1234``, ``http:cad/7f3a…#2``) and
:func:`parse_origin` reads it back (the ``pingan dead-letters show`` argument).

**Size.** A broker refuses a message over its limit (1 MiB by default), and a dead letter the broker
refuses would be retried for ever. :func:`truncated_for_broker` keeps the first bytes and the original
size and SHA-256, which travel in headers and are stored with the row: such a record is visible, and
recognisable when found again, but cannot be replayed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from pingan.errors import InvalidEvent

__all__ = [
    "HEADER_ADAPTER",
    "HEADER_FEED",
    "HEADER_FIELD",
    "HEADER_KIND",
    "HEADER_ORIGIN",
    "HEADER_RAW_SHA256",
    "HEADER_RAW_SIZE",
    "HEADER_REASON",
    "HEADER_RECEIVED_AT",
    "HEADER_REDACTED",
    "HEADER_SOURCE",
    "MAX_RAW_BYTES",
    "MAX_REASON_BYTES",
    "SOURCES",
    "DeadLetter",
    "DeadLetterMessage",
    "KeptBytes",
    "batch_origin",
    "file_origin",
    "from_message",
    "http_origin",
    "parse_origin",
    "to_message",
    "truncated_for_broker",
]

# Header names, shared by every writer and the sink. The first four are what the worker has always written.
HEADER_KIND: Final = "pingan-error-kind"
HEADER_FIELD: Final = "pingan-error-field"
HEADER_REASON: Final = "pingan-error-reason"
HEADER_ORIGIN: Final = "pingan-origin"
HEADER_SOURCE: Final = "pingan-source"
HEADER_FEED: Final = "pingan-feed"
HEADER_ADAPTER: Final = "pingan-adapter"
HEADER_RECEIVED_AT: Final = "pingan-received-at"  # epoch milliseconds
HEADER_RAW_SIZE: Final = "pingan-raw-size"
HEADER_RAW_SHA256: Final = "pingan-raw-sha256"
HEADER_REDACTED: Final = "pingan-redacted"  # "1" when personal identifiers were pseudonymised out of raw

# A header is not the place for a whole validation report.
MAX_REASON_BYTES: Final = 2000
# The raw bytes kept on the topic: well under the broker's default 1 MiB message limit, headers included.
MAX_RAW_BYTES: Final = 256 * 1024

# The ways in, as the ``source`` column and ``pingan dead-letters list --source`` name them.
SOURCES: Final = ("worker", "gateway", "webhook", "tailer", "sink")

_KAFKA_ORIGIN: Final = re.compile(r"^(?P<topic>[A-Za-z0-9._\-]+)/(?P<partition>\d+)/(?P<offset>\d+)$")
_SCHEMED_ORIGIN: Final = re.compile(
    r"^(?P<where>(?:file|http):.+?|[A-Za-z0-9._\-]+/\d+/\d+)(?P<mark>[@#])(?P<position>\d+)$"
)
# What the key columns hold (UInt16, UInt64; Kafka offsets are signed 64-bit): an origin header claiming
# more is kept whole as text rather than making the row unstorable.
_MAX_PARTITION: Final = 2**16 - 1
_MAX_POSITION: Final = 2**63 - 1
# What ClickHouse's DateTime stores; a received_at outside it (a producer's odd record timestamp) would make
# the whole insert fail, so the row takes the time it was stored instead.
_STORABLE_FROM: Final = datetime(1971, 1, 1, tzinfo=UTC)
_STORABLE_UNTIL: Final = datetime(2105, 12, 31, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class KeptBytes:
    """What is kept of a record's bytes: at most the limit, with the original's size and SHA-256."""

    raw: bytes
    size: int
    sha256: str

    @property
    def truncated(self) -> bool:
        return len(self.raw) < self.size


def truncated_for_broker(raw: bytes, max_bytes: int = MAX_RAW_BYTES) -> KeptBytes:
    """The first ``max_bytes`` of ``raw`` (all of it when it fits), its size and its SHA-256 (hex)."""
    return KeptBytes(raw[:max_bytes], len(raw), hashlib.sha256(raw).hexdigest())


@dataclass(frozen=True)
class DeadLetter:
    """One record that could not become an event: where it came from, why, and its (redacted) bytes.

    ``topic``/``partition``/``offset`` are the origin (see the module docstring); ``raw_size`` and
    ``raw_sha256`` describe the original bytes when ``raw`` is a truncated copy (``raw_size`` -1 means "raw
    is complete", filled in at construction). ``source`` is the way in, ``feed`` the feed the record was
    meant for (empty when unknown, e.g. a record that is not JSON), ``adapter`` the mapping function that
    refused it (empty for envelopes, which need none).
    """

    topic: str
    partition: int
    offset: int
    received_at: datetime
    kind: str
    field: str
    reason: str
    raw: bytes
    source: str = "worker"
    feed: str = ""
    adapter: str = ""
    raw_size: int = -1
    raw_sha256: str = ""
    redacted: bool = False

    def __post_init__(self) -> None:
        if self.raw_size < 0:
            object.__setattr__(self, "raw_size", len(self.raw))
        if not self.raw_sha256:
            object.__setattr__(self, "raw_sha256", hashlib.sha256(self.raw).hexdigest())

    @classmethod
    def of(
        cls,
        error: InvalidEvent,
        raw: bytes,
        *,
        origin: str,
        received_at: datetime,
        source: str,
        feed: str = "",
        adapter: str = "",
        redacted: bool = False,
        max_bytes: int = MAX_RAW_BYTES,
    ) -> DeadLetter:
        """The dead letter of ``raw`` refused with ``error``, its bytes cut to ``max_bytes``."""
        topic, partition, offset = parse_origin(origin)
        kept = truncated_for_broker(raw, max_bytes)
        reason = error.reason
        if kept.truncated:
            reason = f"{reason} (the record is {kept.size} bytes; its first {len(kept.raw)} are kept)"
        return cls(
            topic, partition, offset, received_at, error.kind, error.field or "", reason, kept.raw,
            source=source, feed=feed, adapter=adapter, raw_size=kept.size, raw_sha256=kept.sha256, redacted=redacted,
        )  # fmt: skip

    @property
    def origin(self) -> str:
        """The origin as one string: ``topic/partition/offset``, ``topic/partition/offset#index``,
        ``file:path@offset`` or ``http:where#index``."""
        if self.topic.startswith("file:"):
            return f"{self.topic}@{self.offset}"
        if ":" in self.topic or "/" in self.topic:
            return f"{self.topic}#{self.offset}"
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def truncated(self) -> bool:
        return len(self.raw) < self.raw_size

    @property
    def error(self) -> InvalidEvent:
        return InvalidEvent(self.kind, self.reason, self.field or None)

    def storable_received_at(self, fallback: datetime) -> datetime:
        """``received_at`` when ClickHouse's DateTime holds it, else ``fallback`` (when it was stored)."""
        if _STORABLE_FROM <= self.received_at <= _STORABLE_UNTIL:
            return self.received_at
        return fallback


def file_origin(path: str, offset: int) -> str:
    return f"file:{path}@{offset}"


def http_origin(where: str, index: int) -> str:
    """``where`` names the request: ``<producer>/<request id>`` for the gateway and the webhooks."""
    return f"http:{where}#{index}"


def batch_origin(topic: str, partition: int, offset: int, index: int) -> str:
    """The envelope at ``index`` of the event batch record at ``topic/partition/offset``."""
    return f"{topic}/{partition}/{offset}#{index}"


def parse_origin(origin: str) -> tuple[str, int, int]:
    """``(topic, partition, offset)`` of an origin string (the inverse of :attr:`DeadLetter.origin`).

    A string of none of the three forms (or with numbers the key columns cannot hold) is kept whole as the
    topic at (0, 0), so nothing is refused for a badly written origin.
    """
    if (match := _KAFKA_ORIGIN.match(origin)) is not None:
        partition, offset = int(match["partition"]), int(match["offset"])
        if partition <= _MAX_PARTITION and offset <= _MAX_POSITION:
            return match["topic"], partition, offset
    elif (match := _SCHEMED_ORIGIN.match(origin)) is not None:
        position = int(match["position"])
        if position <= _MAX_POSITION:
            return match["where"], 0, position
    return origin, 0, 0


# --- the dead-letter topic ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    """One message for the dead-letter topic (no key: dead letters have no grid)."""

    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)


def to_message(letter: DeadLetter, max_bytes: int = MAX_RAW_BYTES) -> DeadLetterMessage:
    """The dead letter as a topic message: raw bytes (at most ``max_bytes``) as the value, the rest in headers."""
    kept = truncated_for_broker(letter.raw, max_bytes)
    size = letter.raw_size if not kept.truncated else kept.size
    sha256 = letter.raw_sha256 if not kept.truncated else kept.sha256
    headers = [
        (HEADER_KIND, letter.kind.encode()),
        (HEADER_FIELD, letter.field.encode()),
        (HEADER_REASON, _cut_utf8(letter.reason, MAX_REASON_BYTES)),
        (HEADER_ORIGIN, letter.origin.encode()),
        (HEADER_SOURCE, letter.source.encode()),
        (HEADER_FEED, letter.feed.encode()),
        (HEADER_ADAPTER, letter.adapter.encode()),
        (HEADER_RECEIVED_AT, str(int(letter.received_at.timestamp() * 1000)).encode()),
        (HEADER_RAW_SIZE, str(size).encode()),
        (HEADER_RAW_SHA256, sha256.encode()),
    ]
    if letter.redacted:
        headers.append((HEADER_REDACTED, b"1"))
    return DeadLetterMessage(kept.raw, tuple(headers))


def _cut_utf8(text: str, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of UTF-8, never ending inside a character."""
    return text.encode()[:max_bytes].decode("utf-8", errors="ignore").encode()


def _text(headers: Mapping[str, bytes], name: str) -> str:
    return headers.get(name, b"").decode("utf-8", errors="replace")


def _int(headers: Mapping[str, bytes], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def from_message(
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]],
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
) -> DeadLetter:
    """The dead letter a dead-letter topic message carries (``topic``... are that message's own position).

    Messages written before these headers existed, or by a producer that sets none, still become a row:
    kind ``unknown``, origin the message's own position, received when the broker stamped it.
    """
    named = {name: header for name, header in headers if header is not None}
    origin = _text(named, HEADER_ORIGIN) or f"{topic}/{partition}/{offset}"
    received_ms = _int(named, HEADER_RECEIVED_AT)
    if received_ms is None:
        received_ms = timestamp_ms if timestamp_ms is not None and timestamp_ms >= 0 else 0
    try:
        received_at = datetime.fromtimestamp(received_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        received_at = datetime.fromtimestamp(0, UTC)
    raw = value or b""
    origin_topic, origin_partition, origin_offset = parse_origin(origin)
    size = _int(named, HEADER_RAW_SIZE)
    return DeadLetter(
        origin_topic,
        origin_partition,
        origin_offset,
        received_at,
        kind=_text(named, HEADER_KIND) or "unknown",
        field=_text(named, HEADER_FIELD),
        reason=_text(named, HEADER_REASON) or "the dead letter carried no reason",
        raw=raw,
        source=_text(named, HEADER_SOURCE) or "worker",
        feed=_text(named, HEADER_FEED),
        adapter=_text(named, HEADER_ADAPTER),
        raw_size=size if size is not None and size >= len(raw) else len(raw),
        raw_sha256=_text(named, HEADER_RAW_SHA256),
        redacted=named.get(HEADER_REDACTED) == b"1",
    )
