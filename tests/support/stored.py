"""What a test's ClickHouse holds, read with a client of its own (for polling from the test's thread)."""

from __future__ import annotations

from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import connect


def distinct_events(settings: Settings) -> int:
    """Distinct events stored in the settings' database."""
    executor = connect(settings)
    try:
        return events.count_distinct(executor)
    finally:
        executor.close()
