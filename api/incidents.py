"""The incident desk: applies the pure fold (pingan/incidents.py) to what ClickHouse holds, records actions,
and writes the alert of each escalation that came due.

**Recording an action** (``POST /v1/alerts/{alert_id}/actions``): the action is stored in ``alert_actions``
and then sent to the ``alert-actions`` topic (acks=all); the API answers only after both. Both writes are
idempotent by action id, so a client that got no answer (the API was killed, ClickHouse or the broker was
away: 503) sends the same action id again and the action is stored and counted once. A repeat of an action
already stored is answered with the stored copy (``duplicate: true``) and sent to the topic again, since the
first attempt may have stopped before it reached the broker.

**Reads** fold every escalation alert and every action afresh: the state is a function of the stored rows and
the clock, identical on every API replica and after any restart. The rows are kept in memory and refreshed by
reading what is recent (``AppendOnlyRows``), so a read costs two small queries and the fold, not a table scan.

**Escalations** are computed by the fold from event and action times. A background task writes the alert of
each one that came due into the ``alerts`` table (kind ``unacknowledged``, version = the deadline in ms), so
it is on the alert poll and stream: the same alert id and row however often, by however many replicas.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import anyio.to_thread

from pingan.clock import Clock
from pingan.errors import ServiceError, StorageError
from pingan.grids import GridRegistry
from pingan.incidents import (
    Action,
    AlertFact,
    Book,
    Incident,
    IncidentPolicy,
    dedupe,
    fold,
)
from pingan.index.alerts import UNACKNOWLEDGED, Alert
from pingan.producers.kafka import EventProducer
from pingan.settings import Settings
from pingan.store import alert_actions, alerts
from pingan.store.client import Executor
from pingan.topics import ensure_topics

log = logging.getLogger(__name__)
Row = TypeVar("Row", bound=Hashable)

ESCALATION_CONFIG_VERSION = "incidents/1"
PUBLISH_START_SECONDS = 10.0


def policy_from(settings: Settings) -> IncidentPolicy:
    return IncidentPolicy({"red": settings.incident_red_ack_seconds, "orange": settings.incident_orange_ack_seconds})


def new_action_id() -> str:
    return uuid.uuid4().hex


class ActionPublisher:
    """The ``alert-actions`` topic's producer, started on first use (the API serves reads while the broker
    is down; an action then answers 503 and its retry stores nothing twice)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: EventProducer | None = None
        self._lock = asyncio.Lock()

    async def _running(self) -> EventProducer:
        async with self._lock:
            if self._producer is None:
                producer = EventProducer(self._settings, topic=self._settings.topic_alert_actions,
                                         linger_ms=0, client_id="pingan-alert-actions")  # fmt: skip
                try:
                    async with asyncio.timeout(PUBLISH_START_SECONDS):
                        await ensure_topics(self._settings)
                        await producer.start()
                except (ServiceError, TimeoutError) as exc:
                    await producer.stop()
                    raise ServiceError(f"cannot start the alert-actions producer: {exc!r}") from exc
                self._producer = producer
            return self._producer

    async def publish(self, action: Action) -> None:
        """Send the action keyed by its grid and wait for the broker's acks; ServiceError when it fails."""
        producer = await self._running()
        await producer.send(action_document(action))

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def action_document(action: Action) -> dict[str, Any]:
    """The topic's record: the action with its grid (the record key)."""
    body = action.as_dict()
    body["grid_id"] = action.grid_id
    body["at"] = action.at.isoformat()
    return body


# How far back each incremental read goes behind the newest row held: rows may arrive late by this much (the
# worker's alerts come in version order per partition, not across partitions; actions carry the clock of the
# API replica that received them). Anything older that arrives late is noticed by the count and read in full.
ALERT_OVERLAP_MS = 3_600_000
ACTION_OVERLAP_MS = 600_000
FULL_READ_SECONDS = 60.0


class AppendOnlyRows(Generic[Row]):
    """The rows of an append-only table in memory, kept current by reading only the recent ones.

    Each read asks how many rows lie before ``position(newest held) - overlap`` (one number) and reads the rows
    from there on. When that count differs from what memory holds before it (a row that arrived later than
    the overlap, or a merge that folded copies), or every ``full_read_seconds``, everything is read again, so
    memory never drifts from the table for long. Blocking: call from a thread."""

    def __init__(
        self, count_before: Callable[[int], int], read_from: Callable[[int], list[Row]],
        position: Callable[[Row], int], *, overlap: int, full_read_seconds: float = FULL_READ_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._count_before = count_before
        self._read_from = read_from
        self._position = position
        self._overlap = overlap
        self._full_read_seconds = full_read_seconds
        self._monotonic = monotonic
        self._rows: list[Row] | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def rows(self) -> list[Row]:
        with self._lock:
            held = self._rows
            if held is None or self._monotonic() - self._read_at > self._full_read_seconds:
                return self._read_all()
            cutoff = 0 if not held else max(self._position(row) for row in held) - self._overlap
            older = [row for row in held if self._position(row) < cutoff]
            if self._count_before(cutoff) != len(older):
                return self._read_all()
            recent = self._read_from(cutoff)
            if Counter(recent) != Counter(row for row in held if self._position(row) >= cutoff):
                self._rows = older + recent  # changed: a new list (callers compare by identity)
            return self._rows

    def _read_all(self) -> list[Row]:
        self._rows = self._read_from(0)
        self._read_at = self._monotonic()
        return self._rows


class IncidentDesk:
    """Incidents from ClickHouse for the routes; the blocking methods run on a thread."""

    def __init__(
        self, executor: Executor, registry: GridRegistry, settings: Settings, clock: Clock,
        publisher: ActionPublisher,
    ) -> None:  # fmt: skip
        self._executor = executor
        self._registry = registry
        self._clock = clock
        self.policy = policy_from(settings)
        self.publisher = publisher
        self._units: dict[str, Mapping[str, str]] = {}
        self._last: tuple[list, list, Book] | None = None  # (the inputs it folded, by identity; the book)
        self._written: set[str] | None = None  # escalation alert ids known to be stored
        # The fold's inputs in memory, read incrementally (what changed lately), checked against the table.
        self._facts: AppendOnlyRows[tuple[str, str, str, int, datetime]] = AppendOnlyRows(
            lambda position: alerts.escalations_before(executor, position),
            lambda position: alerts.escalation_facts(executor, position),
            lambda fact: fact[3],
            overlap=ALERT_OVERLAP_MS,
        )
        self._actions: AppendOnlyRows[Action] = AppendOnlyRows(
            lambda position: alert_actions.count_before(executor, position),
            lambda position: alert_actions.read_from(executor, position),
            alert_actions.position,
            overlap=ACTION_OVERLAP_MS,
        )

    def scope_units(self, grid_id: str) -> Mapping[str, str]:
        """The grid's unit per scope level and police station (cached: the registry does not change)."""
        units = self._units.get(grid_id)
        if units is None:
            grid = self._registry.get(grid_id)
            units = {} if grid is None else {
                "community": grid.community_id, "subdistrict": grid.subdistrict_id, "district": grid.district_id,
                "police_station": grid.police_station_id,
            }  # fmt: skip
            self._units[grid_id] = units
        return units

    # --- reads ---------------------------------------------------------------------------------------------

    def book(self, extra: tuple[Action, ...] = ()) -> tuple[Book, list[Action]]:
        """Every incident as of the clock's now, and the stored actions (plus ``extra``, not yet stored).

        Without ``extra``, the last book is reused while its inputs are the same rows and no escalation can
        have come due since (``Book.valid_until``): many polls, one fold."""
        rows, stored, now = self._facts.rows(), self._actions.rows(), self._clock.now()
        cached = self._last
        if not extra and cached is not None and cached[0] is rows and cached[1] is stored and (
            cached[2].valid_until is None or now < cached[2].valid_until
        ):  # fmt: skip
            return cached[2], stored
        facts = [AlertFact(alert_id, grid_id, level, as_of) for alert_id, grid_id, level, _, as_of in rows]
        book = fold(facts, [*stored, *extra], self.policy, now, self.scope_units)
        if not extra:
            self._last = (rows, stored, book)
        return book, stored

    # --- actions -------------------------------------------------------------------------------------------

    def stored_copy(self, action_id: str) -> Action | None:
        copies = dedupe(alert_actions.by_id(self._executor, action_id))
        return copies[0] if copies else None

    def received(self, action: Action, incident: Incident) -> Action:
        """The action as received now, on the incident's grid, in milliseconds (what ClickHouse keeps: at, at_ms).

        At least 1 ms after the incident's last action: actions of one incident that this API received one after
        the other keep that order in the fold (it orders by time, then id), even within one millisecond."""
        now = self._clock.now()
        at = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if incident.history:
            at = max(at, max(entry.action.at for entry in incident.history) + timedelta(milliseconds=1))
        return replace(action, grid_id=incident.grid_id, incident_id=incident.incident_id, at=at)

    def store(self, action: Action) -> None:
        alert_actions.insert(self._executor, [action])

    # --- escalation alerts ---------------------------------------------------------------------------------

    def due_escalation_alerts(self, book: Book) -> list[Alert]:
        """The alert of every escalation the fold found due: one per (incident, step), the same each time."""
        found = []
        for incident in book.incidents.values():
            for step in incident.escalations:
                found.append(escalation_alert(incident, step.at, step.from_level, step.to_level, step.unit_id,
                                              self.policy.ack_seconds[incident.level]))  # fmt: skip
        return found

    def write_due_escalations(self) -> int:
        """Store the alerts of escalations that came due and are not stored yet; how many were written."""
        book, _ = self.book()
        due = self.due_escalation_alerts(book)
        if self._written is None:  # once per process: what earlier runs (or other replicas) stored
            self._written = alerts.stored_ids(self._executor, UNACKNOWLEDGED)
        missing = [alert for alert in due if alert.alert_id not in self._written]
        if missing:
            rejected = alerts.insert(self._executor, missing)
            if rejected:
                raise StorageError(f"ClickHouse refused {len(rejected)} escalation alerts")
            self._written.update(alert.alert_id for alert in missing)
            log.info("incidents escalated: %s", ", ".join(a.alert_id for a in missing))
        return len(missing)

    async def run(self, interval: float) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self.write_due_escalations)
            except Exception as exc:  # ClickHouse away: the next round writes what is due then
                log.warning("incident escalations not written: %s", exc)
            await asyncio.sleep(interval)


def escalation_alert(incident: Incident, at: datetime, from_level: str, to_level: str, unit_id: str,
                     waited: float) -> Alert:  # fmt: skip
    """The ``unacknowledged`` alert of one escalation step: keyed by (grid, deadline ms), so it is one row."""
    version = int(at.timestamp() * 1000)
    explanation = {
        "incident_id": incident.incident_id, "from_level": from_level, "to_level": to_level, "unit_id": unit_id,
        "waited_seconds": waited, "opened_at": incident.opened_at.isoformat(),
    }  # fmt: skip
    return Alert(incident.grid_id, UNACKNOWLEDGED, incident.level, incident.level, 0.0, at, version,
                        explanation, ESCALATION_CONFIG_VERSION)  # fmt: skip


def same_request(stored: Action, sent: Action) -> bool:
    """A repeat of the same action (a retry), not another action under the same id."""
    fields = ("alert_id", "kind", "actor", "note", "assignee", "outcome", "target")
    return all(getattr(stored, name) == getattr(sent, name) for name in fields)
