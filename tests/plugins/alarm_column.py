"""Alarm columns (一键报警柱): street posts with an emergency button, a camera and an intercom.

The worked example of docs/adding-a-producer.md, kept here as a plugin the tests register by entry point
(``alarm_column = tests.plugins.alarm_column:feed``) exactly as an ops team's package would. Nothing in
streams/ or schemas/ knows about it.

A column controller logs one JSON line per event: ``{"column_id": "BJZ-0012", "seq": 881, "event": "一键报警",
"time": "2026-11-23 19:05:00", "lon": 104.06, "lat": 30.67, "answered": true, "call_seconds": 42}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pingan.feeds import FeedSpec
from pingan.producers.adapters.base import (
    MapContext,
    event_id,
    iso_utc,
    lookup_category,
    parse_time,
    pick,
    place,
    require,
    to_bool,
    to_int,
)

SOURCE = "alarm_column"


class AlarmColumnPayload(BaseModel):
    """One alarm-column event as stored: which column, what happened, whether the centre answered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column_id: str = Field(min_length=1, max_length=64)
    event: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    answered: bool = False
    call_seconds: int = Field(default=0, ge=0, le=3600)


def map_record(record: Mapping[str, Any], ctx: MapContext) -> dict[str, Any]:
    """One controller log line -> an envelope dict. Raises InvalidEvent for a bad line."""
    column_id = str(require(record, "column_id", ctx, ("zbh", "立柱编号")))
    seq = require(record, "seq", ctx, ("record_id",))
    mapped = lookup_category(require(record, "event", ctx, ("type", "事件")), "event", ctx)
    at = parse_time(require(record, "time", ctx, ("event_time",)), "time", ctx.timezone)
    answered = pick(record, "answered", ctx)
    seconds = pick(record, "call_seconds", ctx)
    return {
        "event_id": event_id("bjz", column_id, seq),
        "source": ctx.source,
        "type": mapped.type,
        "severity": mapped.severity,
        "event_time": iso_utc(at),
        **place(record, ctx),
        "device_id": column_id,
        "payload": {
            "column_id": column_id,
            "event": mapped.type,
            "answered": False if answered is None else to_bool(answered, "answered"),
            "call_seconds": 0 if seconds is None else to_int(seconds, "call_seconds", 0, 3600),
        },
    }


def feed() -> FeedSpec:
    """The entry point's target: the feed's registration (its tables come from the feeds config)."""
    return FeedSpec(SOURCE, AlarmColumnPayload, "one-click alarm columns (一键报警柱)", mapper=map_record)


# The feeds config section the docs walk through, used by the tests as ops would write it.
FEEDS_TOML = """
[feeds.alarm_column]
description = "one-click alarm columns (一键报警柱) on the streets"

[feeds.alarm_column.types]
"一键报警" = { type = "alarm", severity = 4 }
alarm = { type = "alarm", severity = 4 }
"防拆报警" = { type = "tamper", severity = 2 }
tamper = { type = "tamper", severity = 2 }
"设备故障" = { type = "fault", severity = 1 }
fault = { type = "fault", severity = 1 }
"自检" = { type = "self_test", severity = 1 }
self_test = { type = "self_test", severity = 1 }

[feeds.alarm_column.index]
default_weight = 0.0
breakpoints = [[0.0, 0.0], [2.0, 50.0], [5.0, 100.0], [10.0, 150.0], [20.0, 200.0]]

[feeds.alarm_column.index.type_weights]
alarm = 3.0
tamper = 1.0
fault = 0.0
self_test = 0.0
"""
