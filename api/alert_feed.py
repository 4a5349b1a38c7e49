"""The newest alerts in memory, read from ClickHouse once per second for every Server-Sent Events client.

Each open alert stream used to poll ClickHouse every second itself: a hundred big screens, a hundred queries
a second. Now one background task reads what is new and wakes the streams; a stream whose cursor is older than
what memory holds (a client resuming after a long gap, or one asking for the whole history) catches up from
ClickHouse page by page first, as before, then joins the shared feed.

Order and cursors are the store's (``pingan.store.alerts``): alerts sorted by (version, grid_id).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import anyio.to_thread

from pingan.store import alerts
from pingan.store.client import Executor

log = logging.getLogger(__name__)

KEEP = 1000  # alerts held in memory
PAGE = 500  # alerts read per query


def _position(alert: dict[str, Any]) -> tuple[int, str]:
    return alerts.decode_cursor(alert["cursor"])


class AlertFeed:
    def __init__(self, executor: Executor, *, keep: int = KEEP, page: int = PAGE) -> None:
        self._executor = executor
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._keep = keep
        self._page = page
        # True when memory holds every alert after the position just before its oldest one, i.e. the feed
        # has read since it started and has not dropped any; ``_complete_history`` when it holds them all.
        self._loaded = False
        self._complete_history = False
        self._changed = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def changed(self) -> asyncio.Event:
        """An event set at the next change: take it before reading, then wait on it (no lost wake-up)."""
        return self._changed

    def _publish(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    def load(self) -> None:
        """Blocking (a thread): the newest alerts, or what is new since the last read."""
        if not self._loaded:
            newest = alerts.newest(self._executor, self._keep)
            self._recent.extend(newest)
            self._complete_history = len(newest) < self._keep
            self._loaded = True
            return
        cursor = self._recent[-1]["cursor"] if self._recent else None
        while True:
            page = alerts.after(self._executor, cursor, limit=self._page)
            if len(self._recent) + len(page) > self._keep:
                self._complete_history = False  # the oldest ones are about to drop out of memory
            self._recent.extend(page)
            if len(page) < self._page:
                return
            cursor = page[-1]["cursor"]

    async def run(self, interval: float) -> None:
        while True:
            try:
                before = self._recent[-1]["cursor"] if self._recent else None
                await anyio.to_thread.run_sync(self.load)  # not abandoned: shutdown waits for the query
                if (self._recent[-1]["cursor"] if self._recent else None) != before:
                    self._publish()
            except Exception as exc:  # the streams keep their connection and the next round retries
                log.warning("alert feed not refreshed: %s", exc)
            await asyncio.sleep(interval)

    def after(self, cursor: str | None) -> list[dict[str, Any]] | None:
        """Alerts after ``cursor`` from memory (oldest first), or None when memory cannot say (the cursor is
        older than what it holds, or the feed has not read yet)."""
        if not self._loaded:
            return None
        recent = list(self._recent)
        if cursor is None:
            return recent if self._complete_history else None
        position = alerts.decode_cursor(cursor)
        if recent and position < _position(recent[0]) and not self._complete_history:
            return None
        return [alert for alert in recent if _position(alert) > position]
