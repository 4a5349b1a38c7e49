"""The SQL of a lost log on both engines (ClickHouse 18.16 and the current engine in chdb): the open windows'
events a rebuild replays (pingan.store.events.open_window_events) and the log_losses rows the API reports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from chdb.session import Session

from pingan.schemas.envelope import Event
from pingan.store import events, log_losses
from pingan.store.client import Executor
from pingan.store.log_losses import LogLoss
from pingan.store.migrate import migrate
from tests.support.chdb_executor import ChdbExecutor

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["clickhouse-18.16", "chdb"])
def engine(request: pytest.FixtureRequest) -> Executor:
    if request.param == "chdb":
        session: Session = request.getfixturevalue("chdb_session")
        executor: Executor = ChdbExecutor(session, database=f"loss_{uuid.uuid4().hex[:12]}")
    else:
        executor = request.getfixturevalue("server_executor")
    migrate(executor)
    return executor


def _row(event_id: str, grid_id: str, at: datetime, *, partition: int = 1, late: bool = False, offset: int = 0):
    event = Event(event_id=event_id, source="call110", type="dispute", severity=2, event_time=at, receive_time=at,
                  grid_id=grid_id, lon=None, lat=None, device_id="", schema_version=1, payload_json="{}")  # fmt: skip
    return events.row(event, partition=partition, offset=offset, late=late, ingested_at=NOW)


def test_open_window_events_are_the_partitions_on_time_events_within_the_span(engine: Executor) -> None:
    newest = NOW - timedelta(minutes=1, milliseconds=-250)
    events.insert(engine, [
        _row("old", "G1", newest - timedelta(hours=2)),  # before the span
        _row("a", "G1", newest - timedelta(minutes=50)),
        _row("a", "G1", newest - timedelta(minutes=50), offset=7),  # the same event stored twice (a replay)
        _row("b", "G2", newest - timedelta(minutes=10)),
        _row("late", "G2", newest - timedelta(minutes=5), late=True),  # stored, never counted
        _row("other", "G3", newest + timedelta(minutes=1), partition=2),  # another partition
        _row("c", "G1", newest),
    ])  # fmt: skip
    rows = events.open_window_events(engine, 1, span_seconds=3600, floor=NOW - timedelta(days=2))
    ms = int(newest.timestamp() * 1000)
    assert rows == [
        ("a", "G1", "call110", "dispute", 2, ms - 50 * 60_000),
        ("b", "G2", "call110", "dispute", 2, ms - 10 * 60_000),
        ("c", "G1", "call110", "dispute", 2, ms),
    ]
    assert events.open_window_events(engine, 3, span_seconds=3600, floor=NOW - timedelta(days=2)) == []
    assert events.open_window_events(engine, 1, span_seconds=3600, floor=NOW) == []  # all before the floor


def test_the_span_reaches_back_from_the_newest_event_past_the_floor(engine: Executor) -> None:
    # A window longer than the floor's reach: the floor only bounds the search for the newest event.
    newest = NOW - timedelta(hours=1)
    events.insert(engine, [_row("early", "G1", newest - timedelta(days=3)), _row("last", "G1", newest)])
    rows = events.open_window_events(engine, 1, span_seconds=4 * 86_400, floor=NOW - timedelta(days=1))
    assert [row[0] for row in rows] == ["early", "last"]


def test_log_losses_keep_the_latest_version_of_each_detection(engine: Executor) -> None:
    first = LogLoss(NOW - timedelta(hours=1), "w", "t.events", 0, log_losses.LOG_LOST, 7000, 812)
    second = LogLoss(NOW, "w", "t.events", 1, log_losses.STATE_LOST, -1, -1)
    assert log_losses.insert(engine, [first, second]) == []
    assert log_losses.insert(engine, [first.done(log_losses.KEPT, 420, NOW - timedelta(minutes=59))]) == []

    found = log_losses.recent(engine, NOW - timedelta(days=1))
    assert found == [second, first.done(log_losses.KEPT, 420, NOW - timedelta(minutes=59))]
    assert [loss.rebuilt for loss in found] == [False, True]
    assert found[1].document() == {
        "detected_at": "2026-11-23T11:00:00+00:00", "worker": "w", "topic": "t.events", "partition": 0,
        "reason": "log_lost", "done_offset": 7000, "end_offset": 812, "restart_offset": 0, "rebuilt": True,
        "rebuilt_from": "kept", "rebuilt_events": 420, "rebuilt_at": "2026-11-23T11:01:00+00:00",
    }  # fmt: skip
    assert log_losses.recent(engine, NOW - timedelta(minutes=30)) == [second]
    assert log_losses.count_by_partition(engine) == {
        ("t.events", 0, "log_lost"): (1, 0), ("t.events", 1, "state_lost"): (1, 1),
    }  # fmt: skip
