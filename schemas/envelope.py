"""The event envelope every feed shares, and the one function that turns raw bytes into an Event.

Producers in any language send JSON matching ``schemas/jsonschema/envelope.schema.json``; the worker calls
:func:`parse_event`, which raises :class:`pingan.errors.InvalidEvent` with a kind, the field and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import ErrorDetails

from pingan.errors import InvalidEvent
from pingan.schemas.payloads import SOURCE_PAYLOADS

SCHEMA_VERSION = 1

# The oldest time an event may carry. ClickHouse's DateTime holds 1970-2105, but a time before 2000 is an
# epoch-zero default or a typo, never a real incident, and each such day would open a partition of its own.
# The newest is the receiving clock plus ``max_future``. Record timestamps are held to the same window.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
_TIME_RANGE = (
    "UTC or with an offset, from 2000-01-01T00:00:00Z to at most max_future_seconds (default 300) after it is received"
)

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
GridId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lon: float = Field(ge=-180.0, le=180.0)
    lat: float = Field(ge=-90.0, le=90.0)


class Envelope(BaseModel):
    """What a producer sends. ``payload`` is checked against the model of ``source`` afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    source: Name
    type: Name
    # Strict: "4", 4.0 and true are not severities (a feed's own values are mapped by its adapter).
    severity: int = Field(ge=1, le=5, strict=True, description="1 = lowest, 5 = highest, a whole number")
    event_time: AwareDatetime = Field(
        description=f"when it happened: {_TIME_RANGE}", json_schema_extra={"formatMinimum": "2000-01-01T00:00:00Z"}
    )
    receive_time: AwareDatetime | None = Field(
        default=None,
        description=f"when the producer received it (default: when Pingan did): {_TIME_RANGE}",
        json_schema_extra={"formatMinimum": "2000-01-01T00:00:00Z"},
    )
    location: Location | None = None
    grid_id: GridId | None = None
    device_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    schema_version: Literal[1] = SCHEMA_VERSION
    payload: dict[str, Any]


_ENVELOPE = TypeAdapter(Envelope)


@dataclass(frozen=True, slots=True)
class Event:
    """A validated, normalised event: UTC times, typed payload already checked, payload kept as JSON."""

    event_id: str
    source: str
    type: str
    severity: int
    event_time: datetime
    receive_time: datetime
    grid_id: str | None
    lon: float | None
    lat: float | None
    device_id: str
    schema_version: int
    payload_json: str

    @property
    def event_time_ms(self) -> int:
        return int(self.event_time.timestamp() * 1000)

    def with_grid(self, grid_id: str) -> Event:
        return Event(
            self.event_id, self.source, self.type, self.severity, self.event_time, self.receive_time,
            grid_id, self.lon, self.lat, self.device_id, self.schema_version, self.payload_json,
        )  # fmt: skip

    def to_json(self) -> bytes:
        location = None if self.lon is None else {"lon": self.lon, "lat": self.lat}
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "source": self.source,
                "type": self.type,
                "severity": self.severity,
                "event_time": self.event_time,
                "receive_time": self.receive_time,
                "location": location,
                "grid_id": self.grid_id,
                "device_id": self.device_id or None,
                "schema_version": self.schema_version,
                "payload": orjson.Fragment(self.payload_json),
            }
        )


def _field_path(error: ErrorDetails) -> str | None:
    parts = [str(p) for p in error["loc"] if not isinstance(p, str) or not p.startswith("function-")]
    return ".".join(parts) or None


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _invalid_from(exc: ValidationError, prefix: str = "") -> InvalidEvent:
    error = exc.errors(include_url=False)[0]
    field = _field_path(error)
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
    kind = error["type"]
    if kind == "missing":
        category = "missing_field"
    elif kind in _RANGE_ERRORS:
        category = "out_of_range"
    elif kind == "json_invalid":
        category = "bad_json"
    else:
        category = "invalid_field"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    # The value helps whoever fixes the producer; only the envelope's own fields are shown (a payload field can
    # hold a plate or a phone number, which must not reach dead letters' reasons).
    hidden = kind == "missing" or (field or "").startswith("payload")
    got = "" if hidden else f", got {_short(error.get('input'))}"
    return InvalidEvent(category, f"{error['msg']}{got}{more}", field)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def check_time(name: str, value: datetime, *, now: datetime, max_future: timedelta) -> datetime:
    """``value`` in UTC if it lies in the window every stored time must (see EARLIEST_TIME), else InvalidEvent."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset: outside what UTC datetimes hold, so outside the window
        utc = EARLIEST_TIME - timedelta(days=1) if value.year == 1 else datetime.max.replace(tzinfo=UTC)
    if utc < EARLIEST_TIME:
        raise InvalidEvent("out_of_range", f"{name} {value.isoformat()} is before {EARLIEST_TIME.isoformat()}", name)
    if utc > now + max_future:
        raise InvalidEvent("future_timestamp", f"{name} {value.isoformat()} is more than {max_future} ahead of "
                           f"{now.isoformat()}", name)  # fmt: skip
    return utc


def decode_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from bytes, or InvalidEvent("bad_json") saying what was wrong."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_json", f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEvent("bad_json", f"expected a JSON object, got {type(document).__name__}")
    return document


def parse_event(
    raw: bytes,
    *,
    now: datetime,
    max_bytes: int = 64 * 1024,
    max_future: timedelta = timedelta(minutes=5),
    payload_models: Mapping[str, type[BaseModel]] = SOURCE_PAYLOADS,
) -> Event:
    """Validate one raw record. Raises InvalidEvent; never returns a half-checked event.

    ``payload_models`` maps each accepted source to its payload model: the four built-in feeds by default,
    plus any feed registered by a plugin.
    """
    if len(raw) > max_bytes:
        raise InvalidEvent("oversize", f"record is {len(raw)} bytes, the limit is {max_bytes}")
    document = decode_object(raw)
    source = document.get("source")
    if isinstance(source, str) and source not in payload_models:
        known = ", ".join(sorted(payload_models))
        raise InvalidEvent("unknown_source", f"source {source!r} is not one of: {known}", "source")
    try:
        envelope = _ENVELOPE.validate_python(document)
    except ValidationError as exc:
        raise _invalid_from(exc) from None
    _require_place(envelope)  # before the payload's errors
    try:
        payload = payload_models[envelope.source].model_validate(envelope.payload)
    except ValidationError as exc:
        raise _invalid_from(exc, "payload") from None

    return _event(envelope, payload, now=now, max_future=max_future)


def _require_place(envelope: Envelope) -> None:
    if envelope.location is None and envelope.grid_id is None:
        raise InvalidEvent("missing_field", "an event needs a location (lon/lat) or a grid_id", "location")


def _event(envelope: Envelope, payload: BaseModel, *, now: datetime, max_future: timedelta) -> Event:
    """The checks after the models' and the place's (the times' window) and the normalised event: the end of
    parse_event, shared by the one-pass reading of many envelopes (:class:`EnvelopeReader`)."""
    event_time = check_time("event_time", envelope.event_time, now=now, max_future=max_future)
    receive_time = now.astimezone(UTC)
    if envelope.receive_time is not None:
        receive_time = check_time("receive_time", envelope.receive_time, now=now, max_future=max_future)
    try:
        payload_json = orjson.dumps(payload.model_dump(mode="json", exclude_none=True)).decode()
    except orjson.JSONEncodeError as exc:  # e.g. an integer past 64 bits in a plugin's unbounded field
        raise InvalidEvent("invalid_field", f"payload cannot be stored: {exc}", "payload") from None
    location = envelope.location
    return Event(
        envelope.event_id, envelope.source, envelope.type, envelope.severity, event_time, receive_time,
        envelope.grid_id, location.lon if location else None, location.lat if location else None,
        envelope.device_id or "", envelope.schema_version, payload_json,
    )  # fmt: skip


class EnvelopeReader:
    """Many decoded envelopes checked in one call of one validator: the envelope and its source's payload model
    together (a union tagged by ``source``), about half the cost of :func:`parse_event` per envelope (two
    validator calls each, and the bytes decoded again). It only ever accepts: an envelope it does not take whole
    is None, and parse_event, the contract, gives the answer for it (the error's kind, field and reason; or the
    event, in a case this reader is stricter about). The events it does accept are those parse_event returns.
    """

    def __init__(self, payload_models: Mapping[str, type[BaseModel]]) -> None:
        # A source parse_event's envelope would refuse is left to it.
        per_source: list[Any] = [
            create_model(f"Envelope_{name}", __base__=Envelope, source=(Literal[name], ...), payload=(model, ...))
            for name, model in sorted(payload_models.items())
            if _is_name(name)
        ]
        self._adapter: TypeAdapter[list[Any]] | None = None
        if per_source:
            tagged = per_source[0]
            if len(per_source) > 1:
                tagged = Annotated[Union[*per_source], Discriminator("source")]
            # An envelope the union refuses is kept as it came (Any takes anything), so one call never raises.
            either = Annotated[Union[tagged, Any], Field(union_mode="left_to_right")]  # noqa: UP007
            self._adapter = TypeAdapter(list[either])

    def events(self, documents: Sequence[Any], *, now: datetime, max_future: timedelta) -> list[Event | None]:
        """Per decoded envelope, its event, or None where only parse_event can tell (see the class)."""
        if self._adapter is None:
            return [None] * len(documents)
        checked = self._adapter.validate_python(documents)
        return [
            self._checked(document, envelope, now, max_future)
            for document, envelope in zip(documents, checked, strict=True)
        ]

    @staticmethod
    def _checked(document: Any, envelope: Any, now: datetime, max_future: timedelta) -> Event | None:
        # The payload must be a JSON object, as parse_event's envelope requires, before its model sees it (a
        # plugin's model could make an object of something else).
        if not isinstance(envelope, Envelope) or type(document["payload"]) is not dict:
            return None
        try:
            _require_place(envelope)
            return _event(envelope, envelope.payload, now=now, max_future=max_future)  # type: ignore[attr-defined]
        except InvalidEvent:
            return None


_NAME = TypeAdapter(Name)


def _is_name(value: str) -> bool:
    try:
        _NAME.validate_python(value)
    except ValidationError:
        return False
    return True
