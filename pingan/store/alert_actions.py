"""SQL of the ``alert_actions`` table: what command centres did with alerts (``pingan.incidents.Action``).

Append-only and idempotent by action id: readers get every stored copy and fold them with
``pingan.incidents.dedupe`` (the earliest copy of each id counts), so a retried POST or a replayed topic
never counts an action twice and merges need not have run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pingan.incidents import Action
from pingan.store.client import Executor

COLUMNS = (
    "action_id", "alert_id", "incident_id", "grid_id", "kind", "actor", "actor_scope", "at", "at_ms", "note",
    "assignee", "outcome", "target",
)  # fmt: skip
_SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM alert_actions"


def as_row(action: Action) -> tuple[Any, ...]:
    at = action.at.astimezone(UTC)
    return (
        action.action_id, action.alert_id, action.incident_id, action.grid_id, action.kind, action.actor,
        action.actor_scope, int(at.timestamp()), at.microsecond // 1000, action.note, action.assignee, action.outcome,
        action.target,
    )  # fmt: skip


def _action(row: Sequence[Any]) -> Action:
    action_id, alert_id, incident_id, grid_id, kind, actor, actor_scope, at, at_ms, note, assignee, outcome, target = (
        row
    )
    if isinstance(at, int):
        at = datetime.fromtimestamp(at, UTC)
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return Action(
        action_id=action_id, alert_id=alert_id, grid_id=grid_id, kind=kind, actor=actor,
        at=at + timedelta(milliseconds=int(at_ms)), note=note, assignee=assignee, outcome=outcome, target=target,
        actor_scope=actor_scope, incident_id=incident_id,
    )  # fmt: skip


def insert(executor: Executor, actions: Sequence[Action]) -> None:
    """Store actions (rows passed as data: 18.16 hangs on values written into the SQL)."""
    if actions:
        executor.insert("alert_actions", COLUMNS, [as_row(action) for action in actions])


def all_actions(executor: Executor) -> list[Action]:
    """Every stored copy of every action (fold them with ``pingan.incidents.dedupe``)."""
    return [_action(row) for row in executor.query(_SELECT)]


_AT_MS = "toUInt64(at) * 1000 + at_ms"


def position(action: Action) -> int:
    """Where a stored copy sorts for incremental reads: its time in epoch milliseconds."""
    return int(action.at.timestamp() * 1000)


def count_before(executor: Executor, at_ms: int) -> int:
    """Stored copies received before ``at_ms`` (epoch ms)."""
    [(count,)] = executor.query(f"SELECT count() FROM alert_actions WHERE {_AT_MS} < %(at_ms)s", {"at_ms": at_ms})
    return int(count)


def read_from(executor: Executor, at_ms: int) -> list[Action]:
    """The stored copies received at or after ``at_ms`` (epoch ms)."""
    return [_action(row) for row in executor.query(_SELECT + f" WHERE {_AT_MS} >= %(at_ms)s", {"at_ms": at_ms})]


def by_id(executor: Executor, action_id: str) -> list[Action]:
    """The stored copies of one action (none, one, or a few after retries)."""
    return [_action(row) for row in executor.query(_SELECT + " WHERE action_id = %(id)s", {"id": action_id})]
