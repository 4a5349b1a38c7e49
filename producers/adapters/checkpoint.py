"""Checkpoint passes (公安检查站, 电子卡口, 治安卡点): one record per vehicle or person, JSON lines or pushed.

:func:`map_pass` is the pure mapping. The plate is pseudonymised here, at the edge, with the deployment's
key (``settings.pseudonym_key``, producers/pseudonym.py): the envelope carries ``plate_hash`` only, the
event id is built from the hash, and a bad record's dead letter has its plate pseudonymised too, so a raw
plate never reaches Kafka. Unreadable plates (无牌, 未识别...) become no plate.

The category looked up in ``[feeds.checkpoint.types]`` is the record's own ``category`` (a hit type such
as 布控) when it has one, else ``flagged`` or ``pass`` from its flagged field. The event id is
``kk-<checkpoint>-<pass id>``, or, for systems without pass ids, derived from checkpoint, time, direction
and the plate's pseudonym.
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
    to_bool,
)

__all__ = ["map_pass"]

_CHECKPOINT_ID: Final = ("kkbh", "卡口编号", "checkpoint", "device_id")
_DIRECTION: Final = ("fx", "方向", "dir")
_PLATE: Final = ("plate_no", "plate_number", "hphm", "号牌号码", "车牌号", "车牌")
_FLAGGED: Final = ("hit", "is_flagged", "是否布控", "布控")
_CATEGORY: Final = ("hit_type", "alarm_type", "告警类型")
_VEHICLE: Final = ("vehicle_type", "cllx", "车辆类型")
_TIME: Final = ("pass_time", "gcsj", "过车时间", "event_time", "timestamp")
_PASS_ID: Final = ("gcxh", "过车序号", "record_id")

_NO_PLATE: Final = frozenset({"无牌", "无牌车", "未识别", "未知", "车牌", "unknown", "none", "-", "--", "00000000"})
_DIRECTIONS: Final = {
    "in": "in", "进": "in", "入": "in", "进城": "in", "驶入": "in",
    "out": "out", "出": "out", "出城": "out", "驶出": "out",
}  # fmt: skip
_VEHICLES: Final = {
    "car": "car", "小型汽车": "car", "小型轿车": "car", "小客车": "car", "轿车": "car",
    "truck": "truck", "货车": "truck", "大型货车": "truck", "中型货车": "truck", "小型货车": "truck",
    "bus": "bus", "客车": "bus", "大型客车": "bus", "公交车": "bus",
    "motorcycle": "motorcycle", "摩托车": "motorcycle", "电动车": "motorcycle",
    "pedestrian": "pedestrian", "行人": "pedestrian",
    "other": "other", "其他": "other",
}  # fmt: skip


def _direction(value: Any) -> str:
    direction = _DIRECTIONS.get(category_key(value))
    if direction is None:
        raise InvalidEvent("invalid_field", f"direction {value!r} is neither in (进) nor out (出)", "direction")
    return direction


def map_pass(record: Mapping[str, Any], ctx: MapContext) -> dict[str, Any]:
    """One pass record -> an envelope dict with the plate pseudonymised. Raises InvalidEvent if unusable."""
    checkpoint_id = str(require(record, "checkpoint_id", ctx, _CHECKPOINT_ID))
    direction = _direction(require(record, "direction", ctx, _DIRECTION))
    at = parse_time(require(record, "time", ctx, _TIME), "time", ctx.timezone)
    plate = pick(record, "plate", ctx, _PLATE)
    plate_hash = None
    if plate is not None and category_key(plate) not in _NO_PLATE:
        plate_hash = pseudonym(plate, "plate", ctx)
    flagged_value = pick(record, "flagged", ctx, _FLAGGED)
    flagged = False if flagged_value is None else to_bool(flagged_value, "flagged")
    category = pick(record, "category", ctx, _CATEGORY) or ("flagged" if flagged else "pass")
    mapped = lookup_category(category, "category", ctx)
    payload: dict[str, Any] = {
        "checkpoint_id": checkpoint_id,
        "direction": direction,
        "flagged": flagged or mapped.type == "flagged_pass",
    }
    if plate_hash is not None:
        payload["plate_hash"] = plate_hash
    vehicle = pick(record, "vehicle_class", ctx, _VEHICLE)
    if vehicle is not None:
        payload["vehicle_class"] = _VEHICLES.get(category_key(vehicle), "other")
    pass_id = pick(record, "pass_id", ctx, _PASS_ID)
    if pass_id is not None:
        identity = event_id("kk", checkpoint_id, pass_id)
    else:
        identity = event_id("kk", checkpoint_id, int(at.timestamp() * 1000), direction, plate_hash or "none")
    return {
        "event_id": identity,
        "source": ctx.source,
        "type": mapped.type,
        "severity": mapped.severity,
        "event_time": iso_utc(at),
        **place(record, ctx),
        "device_id": checkpoint_id,
        "payload": payload,
    }
