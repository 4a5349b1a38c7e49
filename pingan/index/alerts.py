"""Alerts: when a grid's change of colour is one (rising into orange/red, falling from it), the alert record,
its position in the alert feed (the cursor) and its message on the alerts topic, which is also the API's
alert document."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pingan.errors import InvalidCursor
from pingan.index.levels import ALERT_LEVELS, rank_of

# The kind of the alert written when an incident nobody acknowledged passes up a level (api/incidents.py).
UNACKNOWLEDGED = "unacknowledged"


@dataclass(frozen=True)
class Alert:
    grid_id: str
    kind: str  # "escalation" | "de-escalation"
    level: str
    previous_level: str
    score: float
    as_of: datetime
    version: int
    explanation: dict[str, Any]
    config_version: str

    @property
    def alert_id(self) -> str:
        return f"{self.grid_id}:{self.version}"

    def to_json(self) -> bytes:
        """The message on the alerts topic: the document the API serves for this alert (the time stored, to the
        second, as the table holds it)."""
        as_of = datetime.fromtimestamp(int(self.as_of.timestamp()), UTC)
        document = alert_document(
            self.alert_id, self.grid_id, self.kind, self.level, self.previous_level, self.score, as_of,
            self.version, self.explanation, self.config_version,
        )  # fmt: skip
        return orjson.dumps(document)


def alert_for(
    grid_id: str, previous: str, level: str, score: float, as_of: datetime, version: int,
    explanation: dict[str, Any] | Callable[[], dict[str, Any]], config_version: str,
) -> Alert | None:  # fmt: skip
    """An alert when a grid rises into orange/red or falls from it; None for any other change. The
    explanation may be given as a function, called only for an alert (most changes are not one)."""
    up, down = rank_of(level) > rank_of(previous), rank_of(level) < rank_of(previous)
    if up and level in ALERT_LEVELS:
        kind = "escalation"
    elif down and previous in ALERT_LEVELS:
        kind = "de-escalation"
    else:
        return None
    if callable(explanation):
        explanation = explanation()
    return Alert(grid_id, kind, level, previous, score, as_of, version, explanation, config_version)


def encode_cursor(version: int, grid_id: str) -> str:
    """The alert's position in the feed (alerts are ordered by version, then grid)."""
    return base64.urlsafe_b64encode(orjson.dumps([version, grid_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        version, grid_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return int(version), str(grid_id)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidCursor("not a cursor returned by this API", "after") from None


def alert_document(
    alert_id: str, grid_id: str, kind: str, level: str, previous: str, score: float, as_of: datetime,
    version: int, explanation: dict[str, Any] | None, config_version: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "alert_id": alert_id, "grid_id": grid_id, "kind": kind, "level": level, "previous_level": previous or None,
        "score": score, "as_of": as_of, "explanation": explanation, "config_version": config_version,
        "cursor": encode_cursor(version, grid_id),
    }  # fmt: skip
