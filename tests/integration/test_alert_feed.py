"""The shared alert feed (api/alert_feed.py) on the current engine: what memory can answer, and when a
stream must catch up from ClickHouse instead."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from chdb.session import Session

from pingan.api.alert_feed import AlertFeed
from pingan.index.alerts import alert_for
from pingan.store import alerts
from pingan.store.migrate import migrate
from tests.support.chdb_executor import ChdbExecutor

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _insert(executor: ChdbExecutor, versions: range) -> None:
    made = [alert_for(f"G{v:03d}", "green", "red", 150.0, AT, v, {}, "v1") for v in versions]
    alerts.insert(executor, [a for a in made if a is not None])


@pytest.fixture
def executor(chdb_session: Session) -> ChdbExecutor:
    executor = ChdbExecutor(chdb_session, database=f"feed_{uuid.uuid4().hex[:12]}")
    migrate(executor)
    return executor


def test_memory_answers_recent_cursors_and_defers_older_ones(executor: ChdbExecutor) -> None:
    _insert(executor, range(1, 11))
    feed = AlertFeed(executor, keep=4, page=3)
    assert feed.after(None) is None  # nothing read yet: ClickHouse answers
    feed.load()
    cursors = {a["grid_id"]: a["cursor"] for a in alerts.after(executor, None, limit=100)}
    assert [a["grid_id"] for a in feed.after(cursors["G008"])] == ["G009", "G010"]
    assert feed.after(cursors["G010"]) == []
    assert feed.after(cursors["G002"]) is None  # older than memory: catch up from ClickHouse
    assert feed.after(None) is None  # the whole history is not in memory

    _insert(executor, range(11, 18))  # more than one page: read in pages, the oldest drop out
    feed.load()
    assert feed.after(cursors["G010"]) is None
    assert [a["grid_id"] for a in feed.after(alerts.after(executor, None, limit=100)[13]["cursor"])] == [
        "G015", "G016", "G017",
    ]  # fmt: skip


def test_a_short_history_is_all_in_memory(executor: ChdbExecutor) -> None:
    _insert(executor, range(1, 3))
    feed = AlertFeed(executor, keep=10)
    feed.load()
    assert [a["grid_id"] for a in feed.after(None)] == ["G001", "G002"]
    _insert(executor, range(3, 4))
    feed.load()
    assert [a["grid_id"] for a in feed.after(None)] == ["G001", "G002", "G003"]
