"""110 emergency calls from a CAD (接处警) export: JSON lines or CSV rows, tailed as the file grows.

:func:`map_incident` is the pure mapping from one exported incident to an envelope. Column names differ
between CAD vendors; the usual ones are known (English, the pinyin abbreviations police systems use such as
``jjdbh`` 接警单编号 and ``bjsj`` 报警时间, and the Chinese headers), and ``[feeds.call110.fields]`` in the
feeds config adds a site's own.

Times
    CAD exports write Beijing time without an offset ("2026-11-23 19:05:00"). A time without an offset is
    read in the feed's ``timezone`` (default Asia/Shanghai, UTC+8 all year) and converted to UTC; a time
    with an offset or Z is taken as written; epoch numbers are UTC. The envelope carries UTC ("...Z").

Identity
    The event id is ``cad-<incident id>``: the same incident exported twice (a re-export, a status update,
    a tailer replaying its unacknowledged tail after a restart) is one event for the worker's dedupe.

Category and severity
    The incident's category (a code such as ``criminal`` or the CAD's Chinese label such as 刑事) is looked
    up in ``[feeds.call110.types]``, which gives the envelope's type and severity. The payload keeps the
    CAD priority (1 = most urgent) as written.

Caller names and phone numbers in the export are never copied into the envelope; in dead letters they are
pseudonymised (see base.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pingan.errors import InvalidEvent
from pingan.producers.adapters.base import (
    MapContext,
    event_id,
    iso_utc,
    lookup_category,
    parse_time,
    pick,
    place,
    require,
    to_int,
)

__all__ = ["map_incident"]

_INCIDENT_ID: Final = ("jjdbh", "接警单编号", "警情编号", "incident_no", "incidentId")
_CATEGORY: Final = ("jqlb", "警情类别", "category_name", "type")
_PRIORITY: Final = ("jqjb", "警情级别", "level")
_REPORTED: Final = ("bjsj", "报警时间", "reported", "report_time", "time")
_DISPATCHED: Final = ("pjsj", "派警时间", "dispatched")
_CLOSED: Final = ("jasj", "结警时间", "结案时间", "closed")

# Priorities as CAD exports spell them; anything else must be a number 1-3.
_PRIORITY_WORDS: Final = {"一": 1, "二": 2, "三": 3, "高": 1, "中": 2, "低": 3, "i": 1, "ii": 2, "iii": 3}


def _priority(value: Any) -> int:
    if isinstance(value, str):
        word = value.strip().casefold().removesuffix("级")
        if word in _PRIORITY_WORDS:
            return _PRIORITY_WORDS[word]
        value = word
    return to_int(value, "priority", 1, 3)


def map_incident(record: Mapping[str, Any], ctx: MapContext) -> dict[str, Any]:
    """One CAD incident -> an envelope dict. Raises InvalidEvent for a record that cannot be one."""
    incident_id = str(require(record, "incident_id", ctx, _INCIDENT_ID))
    category = require(record, "category", ctx, _CATEGORY)
    mapped = lookup_category(category, "category", ctx)
    priority = _priority(require(record, "priority", ctx, _PRIORITY))
    reported = parse_time(require(record, "reported_at", ctx, _REPORTED), "reported_at", ctx.timezone)
    payload: dict[str, Any] = {
        "incident_id": incident_id,
        "category": mapped.type,
        "priority": priority,
        "reported_at": iso_utc(reported),
    }
    for name, aliases in (("dispatched_at", _DISPATCHED), ("closed_at", _CLOSED)):
        value = pick(record, name, ctx, aliases)
        if value is not None:
            moment = parse_time(value, name, ctx.timezone)
            if moment < reported:
                raise InvalidEvent("out_of_range", f"{name} {iso_utc(moment)} is before reported_at", name)
            payload[name] = iso_utc(moment)
    return {
        "event_id": event_id("cad", incident_id),
        "source": ctx.source,
        "type": mapped.type,
        "severity": mapped.severity,
        "event_time": iso_utc(reported),
        **place(record, ctx),
        "payload": payload,
    }
