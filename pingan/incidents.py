"""Incidents: what command centres do with an alert, as a pure fold of alerts and actions.

An escalation alert (a grid rising into orange or red) opens an **incident** for its grid. A further
escalation of the same grid while its incident is active (not resolved, not merged) joins that incident
instead of opening another. Centres act on incidents through **actions**; each action is an event with an
id, stored once however often it is sent:

    open ──acknowledge/assign──► acknowledged ──dispatch──► dispatched ──resolve──► resolved
      │                                                                              │
      └────────────── merge (into another incident) ──► merged           reopen ◄────┘ (back to open)

``note`` adds to the history in any state. An action the state does not allow (a second acknowledge, a
resolve of a resolved incident, which two centres acting at once can send) is kept in the history with
``applied = False`` and the reason; the state is what the applied actions made it.

**Escalation of what nobody handles**: an incident awaiting acknowledgement (open: new, or reopened) for
longer than its level's time (``IncidentPolicy.ack_seconds``) at its responsible scope passes up one level
(community → subdistrict → district); each step restarts the time. Escalation times come from event times
(the alert's ``as_of``) and action times only; ``now`` decides only which of them have come yet. The same
alerts and actions therefore give the same incidents and the same escalations whenever and however often
the fold runs (replay, restart, another API replica).

Everything here is pure: no I/O, no clock reads. ``pingan.store.alert_actions`` stores the actions and
``api/incidents.py`` applies the fold.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

ACTION_KINDS: Final = ("acknowledge", "assign", "dispatch", "resolve", "reopen", "merge", "note")
STATUSES: Final = ("open", "acknowledged", "dispatched", "resolved", "merged")
ACTIVE_STATUSES: Final = frozenset({"open", "acknowledged", "dispatched"})
# How an incident ended (考核 counts them): handled on site, a false alarm, passed to another department
# (非警务分流), or nothing to do on arrival.
OUTCOMES: Final = ("handled", "false_alarm", "referred", "no_action_needed")
# The centres an incident can be responsible at, lowest first: it starts at its grid's community.
SCOPE_CHAIN: Final = ("community", "subdistrict", "district")
INCIDENT_LEVELS: Final = ("orange", "red")
_LEVEL_RANK: Final = {"orange": 2, "red": 3}

# Which statuses an action may leave from (the others give applied=False); None: any.
_ALLOWED_FROM: Final[Mapping[str, frozenset[str] | None]] = {
    "acknowledge": frozenset({"open"}),
    "assign": ACTIVE_STATUSES,
    "dispatch": frozenset({"open", "acknowledged"}),
    "resolve": ACTIVE_STATUSES,
    "reopen": frozenset({"resolved", "merged"}),
    "merge": ACTIVE_STATUSES,
    "note": None,
}


@dataclass(frozen=True)
class IncidentPolicy:
    """Seconds an incident of each alert level may wait for acknowledgement at one scope before it passes up."""

    ack_seconds: Mapping[str, float]

    def wait(self, level: str) -> timedelta:
        return timedelta(seconds=self.ack_seconds[level])


@dataclass(frozen=True)
class AlertFact:
    """What the fold needs of an escalation alert (``pingan.store.alerts``)."""

    alert_id: str
    grid_id: str
    level: str  # orange | red
    as_of: datetime  # event time: the alert's risk decision


@dataclass(frozen=True)
class Action:
    """One action of a centre on the incident of ``alert_id`` (any alert of that incident)."""

    action_id: str
    alert_id: str
    grid_id: str
    kind: str
    actor: str  # the key's name
    at: datetime  # when the API received it
    note: str = ""
    assignee: str = ""  # assign, dispatch: a unit id or a grid worker
    outcome: str = ""  # resolve: one of OUTCOMES
    target: str = ""  # merge: an alert id of the incident it is merged into
    actor_scope: str = ""  # the unit the key is scoped to ("" unscoped)
    # The incident it was taken on when received (for SQL over the table); the fold goes by alert_id.
    incident_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id, "alert_id": self.alert_id, "incident_id": self.incident_id or None,
            "kind": self.kind, "actor": self.actor,
            "actor_scope": self.actor_scope or None, "at": self.at, "note": self.note,
            "assignee": self.assignee or None, "outcome": self.outcome or None, "target": self.target or None,
        }  # fmt: skip


@dataclass(frozen=True)
class Escalation:
    at: datetime
    from_level: str
    to_level: str
    unit_id: str  # the unit of ``to_level`` responsible from then on


@dataclass(frozen=True)
class HistoryEntry:
    action: Action
    applied: bool
    reason: str = ""  # why not applied


@dataclass
class Incident:
    incident_id: str  # the alert id of the alert that opened it
    grid_id: str
    level: str  # the highest level of its alerts
    opened_at: datetime
    scope_units: Mapping[str, str]  # scope level -> unit id of the grid
    status: str = "open"
    alert_ids: list[str] = field(default_factory=list)
    responsible_level: str = SCOPE_CHAIN[0]
    awaiting_since: datetime | None = None  # the escalation clock: at the current scope, since this time
    acknowledged_at: datetime | None = None  # the first acknowledgement (assign and dispatch count)
    dispatched_at: datetime | None = None
    resolved_at: datetime | None = None  # the first resolution
    assignee: str = ""
    dispatched_to: str = ""
    outcome: str = ""
    feedback: str = ""
    merged_into: str = ""
    reopened: int = 0
    escalations: list[Escalation] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def responsible_unit(self) -> str:
        return self.scope_units.get(self.responsible_level, "")

    def as_dict(self, *, with_history: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "incident_id": self.incident_id, "grid_id": self.grid_id, "level": self.level, "status": self.status,
            "opened_at": self.opened_at, "alert_ids": list(self.alert_ids),
            "responsible": {"level": self.responsible_level, "unit_id": self.responsible_unit},
            "escalated": bool(self.escalations), "acknowledged_at": self.acknowledged_at,
            "dispatched_at": self.dispatched_at, "resolved_at": self.resolved_at,
            "assignee": self.assignee or None, "dispatched_to": self.dispatched_to or None,
            "outcome": self.outcome or None, "feedback": self.feedback or None,
            "merged_into": self.merged_into or None, "reopened": self.reopened,
            "escalations": [
                {"at": e.at, "from_level": e.from_level, "to_level": e.to_level, "unit_id": e.unit_id}
                for e in self.escalations
            ],
        }  # fmt: skip
        if with_history:
            body["history"] = [
                {**entry.action.as_dict(), "applied": entry.applied, "reason": entry.reason or None}
                for entry in self.history
            ]
        return body


@dataclass(frozen=True)
class Book:
    """The fold's result: every incident by id, and which incident each alert belongs to."""

    incidents: Mapping[str, Incident]
    incident_of: Mapping[str, str]  # alert id -> incident id
    # The earliest time an escalation could next come due (None: none pending): until then, the same inputs
    # fold to this same book whatever ``now`` is.
    valid_until: datetime | None = None

    def for_alert(self, alert_id: str) -> Incident | None:
        incident_id = self.incident_of.get(alert_id)
        return None if incident_id is None else self.incidents[incident_id]


def dedupe(actions: Iterable[Action]) -> list[Action]:
    """One action per id: the earliest copy (by time, then content), whatever order they came in.

    A client retrying a POST, a replay of the topic or two inserts of a ClickHouse row give copies of one
    action; only the first received counts, so retries never change an incident's times."""
    first: dict[str, Action] = {}
    for action in actions:
        kept = first.get(action.action_id)
        if kept is None or _action_order(action) < _action_order(kept):
            first[action.action_id] = action
    return sorted(first.values(), key=_action_order)


def _action_order(action: Action) -> tuple[Any, ...]:
    return (action.at, action.action_id, action.kind, action.actor, action.note, action.assignee, action.outcome,
            action.target, action.actor_scope, action.incident_id)  # fmt: skip


def fold(
    alerts: Iterable[AlertFact],
    actions: Iterable[Action],
    policy: IncidentPolicy,
    now: datetime,
    scope_units: Callable[[str], Mapping[str, str]],
) -> Book:
    """The incidents that ``alerts`` and ``actions`` make, as of ``now`` (escalations due by then included).

    ``scope_units(grid_id)`` gives the grid's unit per scope level (community, subdistrict, district).
    Alerts of other levels than orange/red and actions of unknown alerts are ignored. An action counts from
    its time, or from its alert's time if that is later (an event time may run ahead of the API's clock).
    """
    facts = {alert.alert_id: alert for alert in alerts if alert.level in INCIDENT_LEVELS}
    timeline: list[tuple[datetime, int, str, AlertFact | Action]] = [
        (alert.as_of, 0, alert.alert_id, alert) for alert in facts.values()
    ]
    for action in dedupe(actions):
        alert = facts.get(action.alert_id)
        if alert is not None:
            timeline.append((max(action.at, alert.as_of), 1, action.action_id, action))
    timeline.sort(key=lambda item: item[:3])

    state = _Fold(policy, scope_units)
    for at, _, _, item in timeline:
        # Never past now: an escalation is due only once now reaches it, even when an event time (an alert's
        # as_of) runs ahead of the clock.
        state.escalate_until(min(at, now))
        if isinstance(item, AlertFact):
            state.alert(item)
        else:
            state.act(item)
    state.escalate_until(now)
    return Book(state.incidents, state.incident_of, state.deadlines[0][0] if state.deadlines else None)


class _Fold:
    def __init__(self, policy: IncidentPolicy, scope_units: Callable[[str], Mapping[str, str]]) -> None:
        self.policy = policy
        self.scope_units = scope_units
        self.incidents: dict[str, Incident] = {}
        self.incident_of: dict[str, str] = {}
        self.active_of_grid: dict[str, str] = {}
        # (deadline, incident id, the awaiting_since it was computed from): stale entries are skipped.
        self.deadlines: list[tuple[datetime, str, datetime]] = []

    def _arm(self, incident: Incident) -> None:
        if incident.awaiting_since is None or incident.responsible_level == SCOPE_CHAIN[-1]:
            return
        deadline = incident.awaiting_since + self.policy.wait(incident.level)
        heapq.heappush(self.deadlines, (deadline, incident.incident_id, incident.awaiting_since))

    def escalate_until(self, at: datetime) -> None:
        """Every escalation due at or before ``at``, in deadline order."""
        while self.deadlines and self.deadlines[0][0] <= at:
            deadline, incident_id, since = heapq.heappop(self.deadlines)
            incident = self.incidents[incident_id]
            if incident.status != "open" or incident.awaiting_since != since:
                continue  # acknowledged, closed or already moved on since this deadline was set
            position = SCOPE_CHAIN.index(incident.responsible_level)
            to_level = SCOPE_CHAIN[position + 1]
            incident.escalations.append(
                Escalation(deadline, incident.responsible_level, to_level, incident.scope_units.get(to_level, ""))
            )
            incident.responsible_level = to_level
            incident.awaiting_since = deadline
            self._arm(incident)

    def alert(self, alert: AlertFact) -> None:
        active = self.active_of_grid.get(alert.grid_id)
        if active is not None:
            incident = self.incidents[active]
            incident.alert_ids.append(alert.alert_id)
            self.incident_of[alert.alert_id] = active
            if _LEVEL_RANK[alert.level] > _LEVEL_RANK[incident.level]:
                incident.level = alert.level
                if incident.status == "open":  # a shorter wait from now on, at the scope it is at
                    self._arm(incident)
            return
        incident = Incident(
            incident_id=alert.alert_id, grid_id=alert.grid_id, level=alert.level, opened_at=alert.as_of,
            scope_units=dict(self.scope_units(alert.grid_id)), alert_ids=[alert.alert_id],
            awaiting_since=alert.as_of,
        )  # fmt: skip
        self.incidents[incident.incident_id] = incident
        self.incident_of[alert.alert_id] = incident.incident_id
        self.active_of_grid[alert.grid_id] = incident.incident_id
        self._arm(incident)

    def act(self, action: Action) -> None:
        incident = self.incidents[self.incident_of[action.alert_id]]
        at = max(action.at, incident.opened_at)
        reason = refusal(incident, action, self.incident_of)
        other = self.active_of_grid.get(incident.grid_id)
        if reason is None and action.kind == "reopen" and other is not None:
            reason = f"reopen: incident {other} of the same grid is active (merge into it instead)"
        incident.history.append(HistoryEntry(action, reason is None, reason or ""))
        if reason is not None:
            return
        kind = action.kind
        if kind in ("acknowledge", "assign", "dispatch") and incident.acknowledged_at is None:
            incident.acknowledged_at = at
        if kind in ("acknowledge", "assign", "dispatch"):
            incident.awaiting_since = None
            if incident.status == "open":
                incident.status = "acknowledged"
        if kind == "assign":
            incident.assignee = action.assignee
        elif kind == "dispatch":
            incident.status = "dispatched"
            incident.dispatched_to = action.assignee
            incident.dispatched_at = incident.dispatched_at or at
        elif kind == "resolve":
            incident.status, incident.outcome, incident.feedback = "resolved", action.outcome, action.note
            incident.resolved_at = incident.resolved_at or at
            incident.awaiting_since = None
            self._leave_grid(incident)
        elif kind == "merge":
            incident.status = "merged"
            incident.merged_into = self.incident_of[action.target]
            incident.awaiting_since = None
            self._leave_grid(incident)
        elif kind == "reopen":
            incident.status, incident.reopened = "open", incident.reopened + 1
            incident.awaiting_since = at
            self.active_of_grid[incident.grid_id] = incident.incident_id
            self._arm(incident)

    def _leave_grid(self, incident: Incident) -> None:
        if self.active_of_grid.get(incident.grid_id) == incident.incident_id:
            del self.active_of_grid[incident.grid_id]


def refusal(incident: Incident, action: Action, incident_of: Mapping[str, str]) -> str | None:
    """Why ``action`` cannot apply to ``incident`` in its current state (None: it can)."""
    if action.kind not in _ALLOWED_FROM:
        return f"unknown action {action.kind!r}"
    allowed = _ALLOWED_FROM[action.kind]
    if allowed is not None and incident.status not in allowed:
        return f"{action.kind} is not possible when the incident is {incident.status}"
    if action.kind == "merge":
        target = incident_of.get(action.target)
        if target is None:
            return f"merge: no incident has alert {action.target!r}"
        if target == incident.incident_id:
            return "merge: an incident cannot be merged into itself"
    return None


def request_problem(action: Action) -> tuple[str, str] | None:
    """(field, reason) when an action is malformed whatever the incident's state; None when it is well formed."""
    if action.kind not in ACTION_KINDS:
        return "kind", f"must be one of {', '.join(ACTION_KINDS)}"
    if action.kind in ("assign", "dispatch") and not action.assignee:
        return "assignee", f"{action.kind} needs an assignee (a unit id or a grid worker)"
    if action.kind == "resolve" and action.outcome not in OUTCOMES:
        return "outcome", f"resolve needs an outcome, one of {', '.join(OUTCOMES)}"
    if action.kind == "merge" and not action.target:
        return "target", "merge needs the target: an alert id of the incident to merge into"
    if action.kind in ("resolve", "note") and not action.note.strip():
        return "note", f"{action.kind} needs a note (the feedback of the closed loop)"
    return None


# --- handling figures for the assessment (考核) ---------------------------------------------------------


def rank_quantile(values: Sequence[float], q: float) -> float | None:
    """The value at rank ⌊n·q⌋ (0-based, at most n-1) of the sorted values: ClickHouse's ``quantileExact``,
    so the published figures and an analyst's SQL agree to the second. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(len(ordered) * q))]


@dataclass(frozen=True)
class HandlingFigures:
    unit_id: str
    incidents: int
    acknowledged: int
    resolved: int
    ack_median_seconds: float | None
    ack_p90_seconds: float | None
    resolve_median_seconds: float | None
    resolve_p90_seconds: float | None
    escalated_share: float | None
    reopened_share: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def handling_figures(
    incidents: Iterable[Incident], unit_of: Callable[[Incident], str | None], start: datetime, end: datetime
) -> dict[str, HandlingFigures]:
    """Per unit: the incidents opened in [start, end), seconds from opening to the first acknowledgement and
    to the first resolution (median and p90 by :func:`rank_quantile`), and the shares escalated and reopened.

    Times count whenever they happened (an incident opened on the last evening of a period and resolved the
    next morning counts in the period it was opened in); merged incidents are not counted."""
    by_unit: dict[str, list[Incident]] = {}
    for incident in incidents:
        unit = unit_of(incident)
        if unit is None or incident.status == "merged" or not start <= incident.opened_at < end:
            continue
        by_unit.setdefault(unit, []).append(incident)
    figures = {}
    for unit, found in sorted(by_unit.items()):
        ack = [(i.acknowledged_at - i.opened_at).total_seconds() for i in found if i.acknowledged_at is not None]
        done = [(i.resolved_at - i.opened_at).total_seconds() for i in found if i.resolved_at is not None]
        n = len(found)
        figures[unit] = HandlingFigures(
            unit_id=unit, incidents=n, acknowledged=len(ack), resolved=len(done),
            ack_median_seconds=rank_quantile(ack, 0.5), ack_p90_seconds=rank_quantile(ack, 0.9),
            resolve_median_seconds=rank_quantile(done, 0.5), resolve_p90_seconds=rank_quantile(done, 0.9),
            escalated_share=round(sum(1 for i in found if i.escalations) / n, 4),
            reopened_share=round(sum(1 for i in found if i.reopened) / n, 4),
        )  # fmt: skip
    return figures
