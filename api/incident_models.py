"""Response models of the incident routes (OpenAPI documentation; bodies are built in api/routes/alerts.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class HandlingFigures(BaseModel):
    """A unit's handling of the incidents opened in a period (考核): times in seconds from the opening alert."""

    unit_id: str
    incidents: int = Field(description="incidents opened in the period (merged ones not counted)")
    acknowledged: int
    resolved: int
    ack_median_seconds: float | None = Field(description="to the first acknowledgement: value at rank ⌊n/2⌋")
    ack_p90_seconds: float | None = Field(description="value at rank ⌊0.9·n⌋ (ClickHouse quantileExact)")
    resolve_median_seconds: float | None
    resolve_p90_seconds: float | None
    escalated_share: float | None = Field(description="share passed up at least once for want of acknowledgement")
    reopened_share: float | None = Field(description="share reopened at least once")


class Responsible(BaseModel):
    level: str = Field(description="community, subdistrict or district: the centre that must act now")
    unit_id: str


class EscalationStep(BaseModel):
    at: datetime
    from_level: str
    to_level: str
    unit_id: str


class HistoryItem(BaseModel):
    action_id: str
    alert_id: str
    incident_id: str | None
    kind: str
    actor: str
    actor_scope: str | None
    at: datetime
    note: str
    assignee: str | None
    outcome: str | None
    target: str | None
    applied: bool = Field(description="false: the state did not allow it when it came (kept, with the reason)")
    reason: str | None


class IncidentSummary(BaseModel):
    incident_id: str = Field(description="the alert id of the alert that opened it")
    grid_id: str
    level: str
    status: str = Field(description="open, acknowledged, dispatched, resolved or merged")
    opened_at: datetime
    alert_ids: list[str]
    responsible: Responsible
    escalated: bool
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    resolved_at: datetime | None
    assignee: str | None
    dispatched_to: str | None
    outcome: str | None
    feedback: str | None
    merged_into: str | None
    reopened: int
    escalations: list[EscalationStep]


class IncidentDetail(IncidentSummary):
    history: list[HistoryItem]


class IncidentsResponse(BaseModel):
    count: int
    incidents: list[IncidentSummary]


class AlertDetail(BaseModel):
    alert_id: str
    grid_id: str
    kind: str
    level: str
    previous_level: str | None
    score: float
    as_of: datetime
    explanation: dict[str, Any] | None
    config_version: str
    cursor: str
    incident_id: str | None
    incident_status: str | None
    incident: IncidentDetail | None


class ActionResult(BaseModel):
    action: dict[str, Any]
    applied: bool = Field(description="false: kept in the history, but the incident's state did not allow it")
    reason: str | None = Field(description="why it was not applied")
    duplicate: bool = Field(description="true: this action id was stored before; nothing changed")
    incident: IncidentDetail | None


class HandlingResponse(BaseModel):
    unit_level: str
    start: datetime
    end: datetime
    units: list[HandlingFigures]
