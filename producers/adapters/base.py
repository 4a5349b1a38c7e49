"""What every adapter shares: the mapping context, field helpers, per-record outcomes, redaction. Pure.

An adapter is a pure mapping function ``(record, ctx) -> envelope dict`` (raising
:class:`pingan.errors.InvalidEvent` for a bad record) plus the I/O shell in ``delivery.py``/``tailer.py``.
:class:`FeedAdapter` wraps the mapping function so a bad record never raises: each input record becomes a
:class:`Mapped`, either an envelope that ``pingan.schemas.parse_event`` accepts (checked here, at the edge, so a
producer never sends what the worker would dead-letter) or a :class:`RecordError` and the bytes to
dead-letter.

Dead-letter bytes are the original record's, except that personal identifiers are pseudonymised first:
the dead-letter topic is a Kafka topic like any other, and a raw plate or phone number must never reach
Kafka (docs/architecture.md, privacy). A record that is JSON gets its personal fields replaced by their
pseudonyms (so the record can be replayed after a fix: a value that already is a pseudonym is kept as
is); in any record, text that looks like a Chinese plate, a mobile number or an ID-card number is
replaced by a placeholder.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from pingan.dead_letter import MAX_RAW_BYTES, DeadLetter
from pingan.errors import InvalidEvent
from pingan.feeds import FeedRules, FeedSpec, Mapper, PlaceTable, RecordFields, TypeMapping, category_key
from pingan.grids import GridLookup, resolve_grid
from pingan.producers.kafka import encode_event
from pingan.producers.pseudonym import pseudonymise
from pingan.schemas.envelope import decode_object
from pingan.schemas.payloads import PSEUDONYM_PATTERN

__all__ = [
    "PERSONAL_FIELDS",
    "FeedAdapter",
    "MapContext",
    "Mapped",
    "RecordError",
    "decode_object",
    "event_id",
    "iso_utc",
    "lookup_category",
    "parse_time",
    "pick",
    "place",
    "pseudonym",
    "redact",
    "require",
    "scrub_text",
    "split_document",
    "to_int",
]

_EPOCH_MS_THRESHOLD: Final = 100_000_000_000  # above this an epoch number is in milliseconds (year 1973+)
_EVENT_ID: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_PSEUDONYM: Final = re.compile(PSEUDONYM_PATTERN)

# Raw field names that hold personal identifiers in the feeds we know (pinyin abbreviations are what
# Chinese police systems name their columns: hphm 号牌号码, sfzh 身份证号, bjrdh 报警人电话...).
PERSONAL_FIELDS: Final = frozenset(
    {
        "plate", "plate_no", "plate_number", "hphm", "号牌号码", "车牌", "车牌号",
        "phone", "mobile", "tel", "telephone", "caller_phone", "bjrdh", "报警人电话", "联系电话", "lxdh",
        "id_card", "id_number", "sfzh", "身份证号", "身份证号码",
        "reporter_id", "reporter_phone", "caller", "caller_name", "bjr", "bjrxm", "报警人", "报警人姓名",
    }
)  # fmt: skip

_PLATE = re.compile(
    r"[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼][A-Z][·•\- ]?[A-Z0-9]{4,6}[挂学警港澳]?"
)
_ID_CARD = re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)")
_MOBILE = re.compile(r"(?<!\d)1[3-9]\d[\- ]?\d{4}[\- ]?\d{4}(?!\d)")


@dataclass(frozen=True)
class MapContext:
    """Everything a mapping function may depend on besides the record: no clock, no I/O."""

    source: str
    types: Mapping[str, TypeMapping]
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    pseudonym_key: bytes = b""
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    places: PlaceTable | None = None  # the feed's place table, for records with neither lon/lat nor grid
    record: RecordFields | None = None  # what the generic mapper reads (feeds defined in the config alone)

    @classmethod
    def for_feed(cls, spec: FeedSpec, pseudonym_key: bytes) -> MapContext:
        return cls(
            spec.name, spec.mapping, ZoneInfo(spec.timezone), pseudonym_key, spec.fields, spec.places, spec.record
        )


@dataclass(frozen=True, slots=True)
class RecordError:
    """Why one record did not become an event; the same three facts the worker's dead letters carry."""

    kind: str
    field: str | None
    reason: str

    @classmethod
    def of(cls, exc: InvalidEvent) -> RecordError:
        return cls(exc.kind, exc.field, exc.reason)


@dataclass(frozen=True, slots=True)
class Mapped:
    """One input record after mapping: an envelope, or the dead letter (with redacted bytes) to keep."""

    origin: str  # where the record came from, e.g. "file:/var/cad/export.jsonl@1234" (pingan.dead_letter)
    envelope: dict[str, Any] | None = None
    letter: DeadLetter | None = None

    @property
    def ok(self) -> bool:
        return self.envelope is not None

    @property
    def error(self) -> RecordError | None:
        return (
            None
            if self.letter is None
            else RecordError(self.letter.kind, self.letter.field or None, self.letter.reason)
        )

    @property
    def raw(self) -> bytes:
        """The dead letter's bytes; empty for envelopes."""
        return b"" if self.letter is None else self.letter.raw

    @property
    def redacted(self) -> bool:
        return self.letter is not None and self.letter.redacted


# --- field helpers -----------------------------------------------------------------------------------------


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def pick(record: Mapping[str, Any], name: str, ctx: MapContext, aliases: Sequence[str] = ()) -> Any:
    """The first non-empty value among the configured column names for ``name``, ``name``, then ``aliases``."""
    for key in (*ctx.fields.get(name, ()), name, *aliases):
        value = record.get(key)
        if _present(value):
            return value.strip() if isinstance(value, str) else value
    return None


def require(record: Mapping[str, Any], name: str, ctx: MapContext, aliases: Sequence[str] = ()) -> Any:
    value = pick(record, name, ctx, aliases)
    if value is None:
        raise InvalidEvent("missing_field", f"the record has no {name}", name)
    return value


def to_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise InvalidEvent("invalid_field", f"{name} must be a whole number, got {value!r}", name)
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise InvalidEvent("invalid_field", f"{name} must be a whole number, got {value!r}", name)
    if not low <= number <= high:
        raise InvalidEvent("out_of_range", f"{name} must be between {low} and {high}, got {number}", name)
    return number


def to_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidEvent("invalid_field", f"{name} must be a number, got {value!r}", name)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidEvent("invalid_field", f"{name} must be a number, got {value!r}", name) from None


_TRUE: Final = frozenset({"1", "true", "yes", "y", "t", "是", "有"})
_FALSE: Final = frozenset({"0", "false", "no", "n", "f", "否", "无", ""})


def to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    key = category_key(value)
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise InvalidEvent("invalid_field", f"{name} must be yes or no, got {value!r}", name)


# Times as exports write them: ISO 8601 or Excel-style ("2026/11/23 9:05"), or compact digits
# ("20261123190500"); optional seconds, fraction and offset.
_TIME_SEPARATED = re.compile(
    r"^(?P<y>\d{4})[-/.](?P<mo>\d{1,2})[-/.](?P<d>\d{1,2})(?:T|\s+)(?P<h>\d{1,2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?\s*(?P<tz>Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)
_TIME_COMPACT = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})(?P<d>\d{2})T?(?P<h>\d{2})(?P<mi>\d{2})(?P<s>\d{2})"
    r"(?:[.,](?P<frac>\d{1,9}))?\s*(?P<tz>Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def parse_time(value: Any, name: str, zone: tzinfo) -> datetime:
    """An aware UTC datetime from an export's time.

    Strings with an offset (or Z) are taken as written. Strings without one are local time in ``zone``:
    CAD systems in China export Beijing time without an offset, so "2026-11-23 19:05:00" is 11:05 UTC.
    Numbers (and 10- or 13-digit strings) are Unix epoch seconds, or milliseconds when larger than 10^11;
    they are UTC by definition.
    """
    if isinstance(value, bool):
        raise InvalidEvent("invalid_field", f"{name} is not a time: {value!r}", name)
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= _EPOCH_MS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidEvent("out_of_range", f"{name} is not a plausible epoch time: {value!r}", name) from None
    if not isinstance(value, str):
        raise InvalidEvent("invalid_field", f"{name} is not a time: {value!r}", name)
    text = unicodedata.normalize("NFKC", value).strip()
    if text.isdigit() and len(text) in (10, 13):
        return parse_time(int(text), name, zone)
    match = _TIME_SEPARATED.match(text) or _TIME_COMPACT.match(text)
    if match is None:
        raise InvalidEvent("invalid_field", f"{name} is not a time this adapter reads: {value!r}", name)
    parts = match.groupdict()
    try:
        local = datetime(
            int(parts["y"]), int(parts["mo"]), int(parts["d"]), int(parts["h"]), int(parts["mi"]),
            int(parts["s"] or 0), int((parts["frac"] or "0")[:6].ljust(6, "0")),
        )  # fmt: skip
    except ValueError as exc:
        raise InvalidEvent("out_of_range", f"{name} {value!r}: {exc}", name) from None
    offset = parts["tz"]
    if offset is None:
        return local.replace(tzinfo=zone).astimezone(UTC)
    if offset.upper() == "Z":
        return local.replace(tzinfo=UTC)
    sign = 1 if offset[0] == "+" else -1
    digits = offset[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return (local - sign * delta).replace(tzinfo=UTC)


def iso_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, the spelling every adapter writes."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def lookup_category(value: Any, name: str, ctx: MapContext) -> TypeMapping:
    mapping = ctx.types.get(category_key(value))
    if mapping is None:
        raise InvalidEvent(
            "unknown_category",
            f"{name} {value!r} is not in the [feeds.{ctx.source}.types] table of the feeds config",
            name,
        )
    return mapping


_LON_NAMES: Final = ("lon", "lng", "longitude", "经度", "jd")
_LAT_NAMES: Final = ("lat", "latitude", "纬度", "wd")
_GRID_NAMES: Final = ("grid", "grid_code", "网格编号", "wgbh")


def place(record: Mapping[str, Any], ctx: MapContext) -> dict[str, Any]:
    """``location`` and/or ``grid_id`` for the envelope, from lon/lat columns, a nested location, or a grid."""
    nested = record.get("location")
    if isinstance(nested, Mapping):
        record = {**record, **nested}
    lon, lat = pick(record, "lon", ctx, _LON_NAMES[1:]), pick(record, "lat", ctx, _LAT_NAMES[1:])
    grid_id = pick(record, "grid_id", ctx, _GRID_NAMES)
    result: dict[str, Any] = {}
    if lon is not None or lat is not None:
        if lon is None or lat is None:
            missing = "lat" if lat is None else "lon"
            raise InvalidEvent("missing_field", f"the record has one coordinate but no {missing}", missing)
        lon_value, lat_value = to_float(lon, "lon"), to_float(lat, "lat")
        if not -180.0 <= lon_value <= 180.0:
            raise InvalidEvent("out_of_range", f"lon {lon_value} is not a longitude", "lon")
        if not -90.0 <= lat_value <= 90.0:
            raise InvalidEvent("out_of_range", f"lat {lat_value} is not a latitude", "lat")
        result["location"] = {"lon": lon_value, "lat": lat_value}
    if grid_id is not None:
        result["grid_id"] = str(grid_id)
    if not result and ctx.places is not None:
        found = ctx.places.lookup(record)
        if found is None:
            looked = ", ".join(ctx.places.match)
            raise InvalidEvent(
                "unknown_place",
                f"the record has neither lon/lat nor a grid id, and its {looked} is not in the place table "
                f"{ctx.places.path}",
                ctx.places.match[0],
            )
        result = found.as_envelope()
    if not result:
        raise InvalidEvent("missing_field", "the record has neither lon/lat nor a grid id", "location")
    return result


def event_id(prefix: str, *parts: Any) -> str:
    """A deterministic event id: the same record always gives the same id, so retries dedupe.

    ``prefix-part1-part2`` when that is a valid envelope id; otherwise (ids with Chinese or spaces, too
    long) ``prefix-h`` + a hash of the parts.
    """
    plain = "-".join([prefix, *(str(p) for p in parts)])
    if _EVENT_ID.match(plain):
        return plain
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=12).hexdigest()
    return f"{prefix}-h{digest}"


def pseudonym(value: Any, name: str, ctx: MapContext) -> str:
    """The keyed pseudonym of an identifier; a value that already is one passes (replayed dead letters)."""
    text = str(value).strip()
    if _PSEUDONYM.match(text):
        return text
    try:
        return pseudonymise(text, ctx.pseudonym_key)
    except ValueError as exc:
        raise InvalidEvent("invalid_field", f"{name} cannot be pseudonymised: {exc}", name) from None


def scrub_text(text: str) -> str:
    """Free text without plates, ID-card numbers or mobile numbers (citizens write them into reports).

    Matched on the NFKC form so full-width digits do not slip through; text with nothing to mask comes
    back unchanged (not normalised), so a clean record keeps its exact bytes.
    """
    normal = unicodedata.normalize("NFKC", text)
    scrubbed = _MOBILE.sub("[电话]", _ID_CARD.sub("[身份证]", _PLATE.sub("[车牌]", normal)))
    return text if scrubbed == normal else scrubbed


# --- raw bytes -------------------------------------------------------------------------------------------


_LIST_KEYS: Final = ("alerts", "records", "events", "items", "data")


def split_document(body: bytes) -> tuple[list[tuple[bytes, Mapping[str, Any] | InvalidEvent]], bytes | None]:
    """A pushed document as records: a JSON list, an object with a list (alerts/records/events/items/data),
    or JSON lines. In a batch object the other top-level fields are defaults for every record (a camera
    platform sends ``{"camera_id": ..., "lon": ..., "alerts": [...]}``).

    Returns ``(records, None)`` with each record's own bytes and its dict (or the error for that record),
    or ``([], body)`` when the document as a whole is unreadable and must be dead-lettered in one piece.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) < 2:
            return [], body
    else:
        lines = []
    if lines:
        return [(line, _decode_or_error(line)) for line in lines], None
    defaults: dict[str, Any] = {}
    items: Any = document
    if isinstance(document, dict):
        key = next((k for k in _LIST_KEYS if isinstance(document.get(k), list)), None)
        if key is None:
            return [(body, document)], None  # a single record
        defaults = {k: v for k, v in document.items() if k != key}
        items = document[key]
    if not isinstance(items, list):
        return [], body
    records: list[tuple[bytes, Mapping[str, Any] | InvalidEvent]] = []
    for item in items:
        if isinstance(item, dict):
            # The record as mapped, batch defaults included: its dead letter can be read and replayed alone.
            record = {**defaults, **item}
            records.append((orjson.dumps(record), record))
            continue
        error = InvalidEvent("bad_json", f"expected a JSON object, got {type(item).__name__}")
        records.append((orjson.dumps(item), error))
    return records, None


def _decode_or_error(raw: bytes) -> Mapping[str, Any] | InvalidEvent:
    try:
        return decode_object(raw)
    except InvalidEvent as exc:
        return exc


def _redact_value(value: Any, key: bytes) -> Any:
    if isinstance(value, str):
        if _PSEUDONYM.match(value.strip()):
            return value
        try:
            return pseudonymise(value, key)
        except ValueError:
            return "[redacted]"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _redact_value(str(value), key)
    if value is None or isinstance(value, bool):
        return value
    return "[redacted]"


def _redact_tree(value: Any, personal: frozenset[str], key: bytes) -> Any:
    if isinstance(value, dict):
        return {
            k: _redact_value(v, key) if str(k).casefold() in personal else _redact_tree(v, personal, key)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_tree(v, personal, key) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def redact(raw: bytes, key: bytes, personal_fields: frozenset[str] = PERSONAL_FIELDS) -> bytes:
    """The record with personal identifiers pseudonymised or masked; the very same bytes when it has none."""
    personal = frozenset(name.casefold() for name in personal_fields)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", errors="replace")
        scrubbed = scrub_text(text)
        return raw if scrubbed == text else scrubbed.encode()
    cleaned = _redact_tree(document, personal, key)
    return raw if cleaned == document else orjson.dumps(cleaned)


# --- the adapter -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedAdapter:
    """A feed's mapping function made total: records in, one :class:`Mapped` per record out. Pure.

    A mapped envelope then passes the feed's severity rule, the one validation every way in shares
    (:class:`pingan.feeds.FeedRules`) and, with ``grids``, the grid lookup the worker does: what an adapter
    sends is what the worker accepts. ``source`` is the way in its dead letters name (tailer, webhook).
    """

    spec: FeedSpec
    ctx: MapContext
    mapper: Mapper
    rules: FeedRules | None = None  # None: the feed's own rules with the default limits
    grids: GridLookup | None = None
    source: str = "tailer"

    def __post_init__(self) -> None:
        if self.rules is None:
            object.__setattr__(self, "rules", FeedRules.of({self.spec.name: self.spec}))

    @classmethod
    def for_feed(
        cls,
        spec: FeedSpec,
        pseudonym_key: bytes,
        *,
        max_event_bytes: int = 64 * 1024,
        max_future: timedelta = timedelta(minutes=5),
        grids: GridLookup | None = None,
        source: str = "tailer",
    ) -> FeedAdapter:
        rules = FeedRules.of({spec.name: spec}, max_bytes=max_event_bytes, max_future=max_future)
        return cls(spec, MapContext.for_feed(spec, pseudonym_key), spec.resolve_mapper(), rules, grids, source)

    @property
    def _personal(self) -> frozenset[str]:
        return PERSONAL_FIELDS | frozenset(self.spec.personal_fields)

    def failed(self, raw: bytes, origin: str, error: RecordError, *, now: datetime) -> Mapped:
        """The dead letter of ``raw``: personal identifiers pseudonymised, cut to what the broker takes."""
        cleaned = redact(raw, self.ctx.pseudonym_key, self._personal)
        letter = DeadLetter.of(
            InvalidEvent(error.kind, error.reason, error.field),
            cleaned,
            origin=origin,
            received_at=now,
            source=self.source,
            feed=self.spec.name,
            adapter=self.spec.adapter_name,
            redacted=cleaned != raw,
            max_bytes=MAX_RAW_BYTES,
        )
        return Mapped(origin, letter=letter)

    def _severity(self, record: Mapping[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        rule = self.spec.severity_rule
        if rule is None:
            return envelope
        severity = rule.severity(record, self.spec.name)
        return envelope if severity is None else {**envelope, "severity": severity}

    def map_record(self, record: Mapping[str, Any], raw: bytes, origin: str, *, now: datetime) -> Mapped:
        """Map one decoded record; ``raw`` is what to dead-letter if it is bad."""
        try:
            envelope = self._severity(record, self.mapper(record, self.ctx))
            if envelope.get("source") != self.spec.name:
                raise InvalidEvent("invalid_field", f"the mapper wrote source {envelope.get('source')!r}", "source")
            assert self.rules is not None  # set in __post_init__
            event = self.rules.validate(encode_event(envelope), now=now)
            if self.grids is not None:
                resolve_grid(event, self.grids)
        except InvalidEvent as exc:
            return self.failed(raw, origin, RecordError.of(exc), now=now)
        except Exception as exc:  # a mapper bug must cost one record, not the feed
            return self.failed(raw, origin, RecordError("internal_error", None, f"mapper failed: {exc!r}"), now=now)
        return Mapped(origin, envelope=envelope)

    def map_line(self, line: bytes, origin: str, *, now: datetime) -> Mapped:
        """One JSON-lines record."""
        try:
            record = decode_object(line)
        except InvalidEvent as exc:
            return self.failed(line, origin, RecordError.of(exc), now=now)
        return self.map_record(record, line, origin, now=now)

    def map_document(self, body: bytes, origin: str, *, now: datetime) -> list[Mapped]:
        """A pushed document (a batch, a list, JSON lines or one record): one Mapped per record in it."""
        records, unreadable = split_document(body)
        if unreadable is not None:
            error = RecordError("bad_json", None, "not a JSON record, list or batch")
            return [self.failed(body, f"{origin}#0", error, now=now)]
        results = []
        for number, (raw, record) in enumerate(records):
            where = f"{origin}#{number}"
            if isinstance(record, InvalidEvent):
                results.append(self.failed(raw, where, RecordError.of(record), now=now))
            else:
                results.append(self.map_record(record, raw, where, now=now))
        return results
