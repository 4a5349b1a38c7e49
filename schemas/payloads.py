"""Payloads of the four feeds. Each is validated after the envelope, chosen by the envelope's ``source``.

Person-linked identifiers (plates, reporter ids) must arrive pseudonymised: a keyed hash written as
``p1:`` + 32 hex digits (see producers/pseudonym.py). A raw plate or phone number fails validation.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

PSEUDONYM_PATTERN = r"^p1:[0-9a-f]{32}$"
Pseudonym = Annotated[str, StringConstraints(pattern=PSEUDONYM_PATTERN)]
ShortId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Call110Category(StrEnum):
    CRIMINAL = "criminal"
    PUBLIC_ORDER = "public_order"
    TRAFFIC = "traffic"
    FIRE = "fire"
    DISPUTE = "dispute"
    HELP = "help"
    NON_POLICE = "non_police"


class Call110Payload(_Payload):
    """An emergency-call incident (110 接处警)."""

    incident_id: ShortId
    category: Call110Category
    priority: int = Field(ge=1, le=3, description="1 = most urgent")
    reported_at: AwareDatetime
    dispatched_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None


class CameraAnalytic(StrEnum):
    CROWD_DENSITY = "crowd_density"
    INTRUSION = "intrusion"
    FIGHT = "fight"
    FALL = "fall"
    SMOKE_FIRE = "smoke_fire"
    WATCHLIST_HIT = "watchlist_hit"


class CameraPayload(_Payload):
    """A video-analytics alert from a fixed camera (天网 / 雪亮工程)."""

    camera_id: ShortId
    analytic: CameraAnalytic
    confidence: float = Field(ge=0.0, le=1.0)
    count: int = Field(default=1, ge=0, le=1_000_000, description="people or objects counted")


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class VehicleClass(StrEnum):
    CAR = "car"
    TRUCK = "truck"
    BUS = "bus"
    MOTORCYCLE = "motorcycle"
    PEDESTRIAN = "pedestrian"
    OTHER = "other"


class CheckpointPayload(_Payload):
    """A vehicle or person pass at a fixed checkpoint (检查站 / 电子卡口)."""

    checkpoint_id: ShortId
    direction: Direction
    plate_hash: Pseudonym | None = None
    flagged: bool = False
    vehicle_class: VehicleClass = VehicleClass.CAR


class ReporterRole(StrEnum):
    GRID_WORKER = "grid_worker"
    CITIZEN = "citizen"


class AppReportCategory(StrEnum):
    DISPUTE = "dispute"
    HAZARD = "hazard"
    STREET_ORDER = "street_order"
    ONE_CLICK_ALARM = "one_click_alarm"


class AppReportPayload(_Payload):
    """A report from the safety app: grid workers and citizens (平安APP / 网格员)."""

    report_id: ShortId
    reporter_role: ReporterRole
    reporter_id: Pseudonym | None = None
    category: AppReportCategory
    text: str = Field(default="", max_length=2000)
    photo_count: int = Field(default=0, ge=0, le=50)


FieldValue = str | int | float | bool | None


class DevicePayload(_Payload):
    """A record of a feed defined only in the feeds config (``[feeds.NAME.record]``, e.g. IoT sensors):
    its own id and category, the device, and the fields the config says to keep, as the device wrote them."""

    record_id: ShortId
    category: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="the device's own category, as written (the envelope's type is what the feed's table maps it to)"
    )
    device_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    fields: dict[Annotated[str, StringConstraints(max_length=64)], FieldValue] = Field(
        default_factory=dict, max_length=32, description="the record's fields named by [record].keep"
    )


# The payload model of every known source. A source not in this map is rejected as unknown.
SOURCE_PAYLOADS: dict[str, type[BaseModel]] = {
    "call110": Call110Payload,
    "camera": CameraPayload,
    "checkpoint": CheckpointPayload,
    "app_report": AppReportPayload,
}
