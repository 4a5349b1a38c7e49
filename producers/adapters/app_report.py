"""App reports (平安APP, 居民通, 网格员): grid workers' and citizens' reports of disputes, hazards,
street-order problems and one-click alarms.

:func:`map_report` is the pure mapping. The reporter's id (often a phone number) is pseudonymised at the
edge; phone numbers, ID-card numbers and plates written into the free text are masked (citizens write
"我的电话138..."), and the text is cut to the payload's 2,000 characters. ``photos`` may be a count or the
list of photo references (only the count travels). The category is looked up in
``[feeds.app_report.types]``; the event id is ``app-<report id>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pingan.errors import InvalidEvent
from pingan.feeds import category_key
from pingan.producers.adapters.base import (
    MapContext,
    event_id,
    iso_utc,
    lookup_category,
    parse_time,
    pick,
    place,
    pseudonym,
    require,
    scrub_text,
    to_int,
)

__all__ = ["map_report"]

MAX_TEXT: Final = 2000
_REPORT_ID: Final = ("report_no", "sjbh", "事件编号", "reportId")
_ROLE: Final = ("role", "reporter_type", "上报人类型")
_REPORTER: Final = ("reporter", "user_id", "reporter_phone", "phone", "mobile", "上报人")
_CATEGORY: Final = ("type", "事件类型", "类别")
_TEXT: Final = ("content", "description", "内容", "描述")
_PHOTOS: Final = ("photos", "images", "图片")
_TIME: Final = ("time", "report_time", "上报时间", "event_time")
_ROLES: Final = {
    "grid_worker": "grid_worker", "网格员": "grid_worker", "worker": "grid_worker",
    "citizen": "citizen", "群众": "citizen", "居民": "citizen", "市民": "citizen", "resident": "citizen",
}  # fmt: skip


def _photo_count(record: Mapping[str, Any], ctx: MapContext) -> int:
    count = pick(record, "photo_count", ctx)
    if count is not None:
        return to_int(count, "photo_count", 0, 50)
    photos = pick(record, "photos", ctx, _PHOTOS[1:])
    if photos is None:
        return 0
    if not isinstance(photos, list):
        raise InvalidEvent("invalid_field", "photos must be a list of photo references", "photos")
    return to_int(len(photos), "photos", 0, 50)


def map_report(record: Mapping[str, Any], ctx: MapContext) -> dict[str, Any]:
    """One report -> an envelope dict, reporter pseudonymised, text masked. Raises InvalidEvent if unusable."""
    report_id = str(require(record, "report_id", ctx, _REPORT_ID))
    role_value = require(record, "reporter_role", ctx, _ROLE)
    role = _ROLES.get(category_key(role_value))
    if role is None:
        raise InvalidEvent("invalid_field", f"reporter_role {role_value!r} is neither 网格员 nor 群众", "reporter_role")
    mapped = lookup_category(require(record, "category", ctx, _CATEGORY), "category", ctx)
    at = parse_time(require(record, "reported_at", ctx, _TIME), "reported_at", ctx.timezone)
    text = pick(record, "text", ctx, _TEXT)
    payload: dict[str, Any] = {
        "report_id": report_id,
        "reporter_role": role,
        "category": mapped.type,
        "text": scrub_text(str(text))[:MAX_TEXT] if text is not None else "",
        "photo_count": _photo_count(record, ctx),
    }
    reporter = pick(record, "reporter_id", ctx, _REPORTER)
    if reporter is not None:
        payload["reporter_id"] = pseudonym(reporter, "reporter_id", ctx)
    return {
        "event_id": event_id("app", report_id),
        "source": ctx.source,
        "type": mapped.type,
        "severity": mapped.severity,
        "event_time": iso_utc(at),
        **place(record, ctx),
        "payload": payload,
    }
