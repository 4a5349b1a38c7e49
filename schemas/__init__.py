"""Event schemas: the envelope, the four source payloads, validation and JSON Schema export."""

from pingan.schemas.envelope import SCHEMA_VERSION, Envelope, Event, Location, parse_event
from pingan.schemas.payloads import SOURCE_PAYLOADS

__all__ = ["SCHEMA_VERSION", "SOURCE_PAYLOADS", "Envelope", "Event", "Location", "parse_event"]
