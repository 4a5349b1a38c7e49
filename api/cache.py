"""A one-value, time-to-live cache that many threads can share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TTLCache(Generic[T]):
    """Holds one value for ``ttl`` seconds.

    The load runs under the lock, so when the value expires while a hundred dashboards poll, one of them
    queries and the others wait for its result instead of issuing a hundred queries. A failed load caches
    nothing: the next caller tries again.
    """

    def __init__(self, ttl: float, *, timer: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._timer = timer
        self._lock = threading.Lock()
        self._entry: tuple[float, T] | None = None  # (loaded at, value)

    def get(self, load: Callable[[], T]) -> T:
        with self._lock:
            now = self._timer()
            if self._entry is not None and now - self._entry[0] < self._ttl:
                return self._entry[1]
            value = load()
            # Stamped after the load, so a slow query still gets its full TTL of reuse.
            self._entry = (self._timer(), value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._entry = None
