"""The map's risk snapshot, kept in memory: polls read it, a background task keeps it fresh.

Every dashboard polls ``/v1/grids/risk``; none of those polls reaches ClickHouse. The refresher asks
ClickHouse a one-row question per interval (has ``risk_latest`` changed?) and reads the table only when it
has. A snapshot whose grids are the same as the current one's is dropped, so the version (and the ETag built
from it) changes only when what a map shows changes.

Versions are milliseconds of the wall clock at which a snapshot was built (strictly increasing within a
process), so a version a client saw before an API restart is unknown afterwards rather than silently
meaning another snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from pingan.api.responses import dumps
from pingan.api.views import RiskSnapshot

log = logging.getLogger(__name__)

# Versions remembered for ``?since=``: a client that polls at least once per this many changes gets deltas.
SINCE_HISTORY = 64


# What "the grid's risk changed" means for ``since``: what the map shows and why. Not the spatial z-scores,
# which describe the whole district and move a little whenever any grid changes: with them every grid
# would be "changed" at every version.
RISK_FIELDS = ("level", "score", "own_level", "own_score", "as_of", "dominant_source", "window_events",
               "config_version")  # fmt: skip


def signatures(grids: Sequence[dict[str, Any]]) -> tuple[int, ...]:
    """One hash per grid (registry order) of its risk (RISK_FIELDS and the spatial lift)."""
    return tuple(hash((*(item[name] for name in RISK_FIELDS), (item["spatial"] or {}).get("lift"))) for item in grids)


def content_digest(grids: Sequence[dict[str, Any]]) -> bytes:
    """Everything a poll returns about every grid: equal digests, byte-identical bodies (one version)."""
    return hashlib.blake2b(dumps(list(grids)), digest_size=16).digest()


@dataclass(frozen=True)
class Versioned:
    snapshot: RiskSnapshot
    signatures: tuple[int, ...]
    digest: bytes
    marker: Hashable  # what the change probe answered when this snapshot was read

    @property
    def version(self) -> int:
        return self.snapshot.version


class SnapshotStore:
    """The current snapshot plus the per-grid signatures of recent versions (for ``since``).

    ``probe`` is cheap and answers something that changes whenever the risk table does; ``load`` reads the
    table and builds a snapshot of the given version. Both block (ClickHouse): call from a thread.
    """

    def __init__(
        self,
        load: Callable[[int], RiskSnapshot],
        probe: Callable[[], Hashable],
        *,
        history: int = SINCE_HISTORY,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._probe = probe
        self._history_size = history
        self._wall_ms = wall_ms
        self._timer = timer
        self._lock = threading.Lock()
        self._current: Versioned | None = None
        self._history: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._checked_at: float | None = None  # monotonic time of the last successful probe

    @property
    def current(self) -> Versioned | None:
        return self._current

    def age_seconds(self) -> float | None:
        """Seconds since the snapshot was last confirmed current (None before the first read)."""
        checked = self._checked_at
        return None if checked is None else self._timer() - checked

    def refresh(self) -> Versioned:
        """Probe, and read the table if it changed. Raises what the store raises (StorageError)."""
        with self._lock:
            marker = self._probe()
            current = self._current
            if current is not None and marker == current.marker:
                self._checked_at = self._timer()
                return current
            version = self._wall_ms()
            if current is not None:
                version = max(version, current.version + 1)
            snapshot = self._load(version)
            digest = content_digest(snapshot.grids)
            if current is not None and digest == current.digest:
                # The table changed (a merge, a rewrite of equal values) but no grid did: same version.
                current = Versioned(current.snapshot, current.signatures, current.digest, marker)
            else:
                sigs = signatures(snapshot.grids)
                current = Versioned(snapshot, sigs, digest, marker)
                self._history[version] = sigs
                while len(self._history) > self._history_size:
                    self._history.popitem(last=False)
            self._current = current
            self._checked_at = self._timer()
            return current

    def for_request(self, *, refreshed_in_background: bool) -> Versioned:
        """What a request serves: with the background refresher running, the snapshot in memory, whatever
        its age (a failing refresher shows in ``age_seconds`` and the metrics, not as a ClickHouse query per
        poll); the first request before any read, or every request without the refresher (tests), reads."""
        current = self._current
        if refreshed_in_background and current is not None:
            return current
        return self.refresh()

    def changed_since(self, version: int, current: Versioned) -> list[dict[str, Any]] | None:
        """The grids of ``current`` whose risk differs from version ``version``; None if that version is
        unknown (too old, or from before a restart)."""
        if version == current.version:
            return []
        with self._lock:
            old = self._history.get(version)
        if old is None or len(old) != len(current.signatures):
            return None
        grids = current.snapshot.grids
        return [grids[i] for i, (a, b) in enumerate(zip(old, current.signatures, strict=True)) if a != b]
