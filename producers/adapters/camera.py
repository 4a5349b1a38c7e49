"""Camera analytics (天网 / 雪亮工程): webhook alert batches from a video-analytics platform.

A webhook body is a JSON document: a list of alerts, or an object with the list under ``alerts`` (also
``events``, ``records``, ``items``, ``data``) whose other fields are defaults for every alert — a platform
that pushes per camera sends ``{"camera_id": "C-0001", "lon": ..., "lat": ..., "alerts": [...]}``.

:func:`map_alert` is the pure mapping of one alert; ``POST /v1/webhooks/camera`` (``api/webhooks.py``, the
webhook every feed has) maps each alert of a pushed body with it, produces the good ones, dead-letters the
bad ones and answers per alert, only after the broker acknowledged everything.

Analytic names are looked up in ``[feeds.camera.types]`` (codes such as ``fight`` or the platform's labels
such as 打架斗殴). Confidence may be 0-1 or a percentage (0-100, or "93%"). The event id is
``cam-<camera>-<alert id>``; an alert without an id gets one derived from camera, analytic and time, so a
platform re-sending a batch produces the same ids.
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
    to_float,
    to_int,
)

__all__ = ["map_alert"]

_CAMERA_ID: Final = ("cameraId", "camera", "device_id", "deviceId", "摄像机编号", "设备编号")
_ANALYTIC: Final = ("type", "event_type", "eventType", "alarm_type", "alarmType", "算法类型", "告警类型")
_CONFIDENCE: Final = ("score", "conf", "置信度")
_COUNT: Final = ("people", "num", "人数", "数量")
_TIME: Final = ("event_time", "timestamp", "alarm_time", "alarmTime", "告警时间")
_ALERT_ID: Final = ("alarm_id", "alertId", "alarmId", "告警编号")


def _confidence(value: Any) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        number = to_float(value.strip()[:-1], "confidence") / 100
    else:
        number = to_float(value, "confidence")
        if 1.0 < number <= 100.0:  # platforms that report percent
            number /= 100
    if not 0.0 <= number <= 1.0:
        raise InvalidEvent("out_of_range", f"confidence {value!r} is neither 0-1 nor a percentage", "confidence")
    return number


def map_alert(record: Mapping[str, Any], ctx: MapContext) -> dict[str, Any]:
    """One analytic alert -> an envelope dict. Raises InvalidEvent for an alert that cannot be one."""
    camera_id = str(require(record, "camera_id", ctx, _CAMERA_ID))
    mapped = lookup_category(require(record, "analytic", ctx, _ANALYTIC), "analytic", ctx)
    at = parse_time(require(record, "time", ctx, _TIME), "time", ctx.timezone)
    confidence = _confidence(require(record, "confidence", ctx, _CONFIDENCE))
    count_value = pick(record, "count", ctx, _COUNT)
    count = 1 if count_value is None else to_int(count_value, "count", 0, 1_000_000)
    alert_id = pick(record, "alert_id", ctx, _ALERT_ID)
    if alert_id is not None:
        identity = event_id("cam", camera_id, alert_id)
    else:
        identity = event_id("cam", camera_id, mapped.type, int(at.timestamp() * 1000))
    return {
        "event_id": identity,
        "source": ctx.source,
        "type": mapped.type,
        "severity": mapped.severity,
        "event_time": iso_utc(at),
        **place(record, ctx),
        "device_id": camera_id,
        "payload": {"camera_id": camera_id, "analytic": mapped.type, "confidence": confidence, "count": count},
    }
