"""The generic mapper of feeds defined only in the feeds config: IoT sensors and other devices.

A ``[feeds.NAME.record]`` section names the record's fields (see docs/adding-a-producer.md)::

    [feeds.electrical_fire.record]
    id = "alarm_id"                  # the record's own id: the event id is "<feed>-<device>-<id>"
    category = "alarm_type"          # looked up in [feeds.electrical_fire.types]
    time = ["alarm_time", "time"]    # the first present one; local time in the feed's time zone
    device = "device_id"             # optional
    keep = ["value", "unit"]         # optional: copied into the payload's fields

The place comes from the record's lon/lat or grid id, else from the feed's place table; the severity from
the category table, or from the device's own level when the feed has a ``[severity]`` rule (applied by
:class:`pingan.producers.adapters.base.FeedAdapter` for every feed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pingan.errors import InvalidEvent
from pingan.feeds import RecordFields
from pingan.producers.adapters.base import MapContext, event_id, iso_utc, lookup_category, parse_time, pick, place

__all__ = ["map_record"]

_MAX_KEPT_TEXT: Final = 256


def _first(record: Mapping[str, Any], names: tuple[str, ...], ctx: MapContext, what: str) -> Any:
    value = pick(record, names[0], ctx, names[1:])
    if value is None:
        raise InvalidEvent("missing_field", f"the record has no {what} (looked for {', '.join(names)})", names[0])
    return value


def _kept(record: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name in names:
        value = record.get(name)
        if value is None:
            continue
        if isinstance(value, dict | list):
            raise InvalidEvent("invalid_field", f"{name} must be a plain value, got a {type(value).__name__}", name)
        if isinstance(value, str) and len(value) > _MAX_KEPT_TEXT:
            value = value[:_MAX_KEPT_TEXT]
        kept[name[:64]] = value
    return kept


def map_record(record: Mapping[str, Any], ctx: MapContext) -> dict[str, Any]:
    """One device record -> an envelope dict, as the feed's ``[record]`` section describes it."""
    fields: RecordFields | None = ctx.record
    if fields is None:
        raise InvalidEvent("internal_error", f"feed {ctx.source} has no [feeds.{ctx.source}.record] section")
    record_id = str(_first(record, fields.id, ctx, "id"))
    category = _first(record, fields.category, ctx, "category")
    mapped = lookup_category(category, fields.category[0], ctx)
    at = parse_time(_first(record, fields.time, ctx, "time"), fields.time[0], ctx.timezone)
    device = pick(record, fields.device[0], ctx, fields.device[1:]) if fields.device else None
    device_id = None if device is None else str(device)
    envelope: dict[str, Any] = {
        "event_id": event_id(ctx.source.replace("_", "-"), *(p for p in (device_id, record_id) if p is not None)),
        "source": ctx.source,
        "type": mapped.type,
        "severity": mapped.severity,
        "event_time": iso_utc(at),
        **place(record, ctx),
        "payload": {
            "record_id": record_id[:64],
            "category": str(category)[:64],
            **({"device_id": device_id} if device_id is not None else {}),
            "fields": _kept(record, fields.keep),
        },
    }
    if device_id is not None:
        envelope["device_id"] = device_id
    return envelope
