"""SQL of ``risk_updates`` (every change) and ``risk_latest`` (the current risk of each grid)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from pingan.index.records import RiskUpdate
from pingan.store.client import Executor, Rejected, insert_isolating

COLUMNS = (
    "grid_id", "as_of", "score", "level", "previous_level", "window_events", "dominant_source",
    "config_version", "version", "live_level", "explanation",
)  # fmt: skip


def row(update: RiskUpdate) -> tuple[Any, ...]:
    """The update as a row of ``risk_updates`` / ``risk_latest``, in COLUMNS' order."""
    return (
        update.grid_id, int(update.as_of.timestamp()), update.score, update.level, update.previous_level,
        update.window_events, update.dominant_source, update.config_version, update.version, update.live_level,
        orjson.dumps(update.explanation()).decode(),
    )  # fmt: skip


def insert(executor: Executor, updates: Sequence[RiskUpdate], live: Sequence[RiskUpdate] = ()) -> Rejected:
    """Decided updates go to the log and the latest table; live ones (provisional, or a step re-asserting what
    it decided over one) to the latest table only. Returns the updates ClickHouse refused, the others stored."""
    rejected = insert_isolating(executor, "risk_updates", COLUMNS, updates, row)
    return rejected + insert_isolating(executor, "risk_latest", COLUMNS, [*updates, *live], row)


_LATEST_COLUMNS = ("grid_id", "as_of", "score", "level", "previous_level", "window_events", "dominant_source",
                   "config_version")  # fmt: skip


def latest(executor: Executor) -> list[dict[str, Any]]:
    """The current risk of every grid that has one (grids never assessed are green by definition)."""
    rows = executor.query(
        """
        SELECT grid_id, as_of, score, level, previous_level, window_events, dominant_source, config_version
        FROM risk_latest FINAL
        ORDER BY grid_id
        """
    )
    return [dict(zip(_LATEST_COLUMNS, r, strict=True)) for r in rows]


def change_marker(executor: Executor) -> tuple[int, int, int]:
    """A one-row answer that changes whenever ``risk_latest`` does: every insert adds rows (count, the
    versions' sum and maximum move); a background merge lowers the count without changing any grid, which
    costs one needless re-read. The API's map snapshot reads the table only when this changes."""
    rows = executor.query("SELECT count(), max(version), sum(version) FROM risk_latest")
    count, highest, total = rows[0]
    return int(count), int(highest), int(total)


def hotspots(executor: Executor, limit: int) -> list[dict[str, Any]]:
    """The grids with the highest current score."""
    rows = executor.query(
        """
        SELECT grid_id, as_of, score, level, previous_level, window_events, dominant_source, config_version
        FROM risk_latest FINAL
        WHERE score > 0
        ORDER BY score DESC, grid_id
        LIMIT %(limit)s
        """,
        {"limit": int(limit)},
    )
    return [dict(zip(_LATEST_COLUMNS, r, strict=True)) for r in rows]


def explanation(executor: Executor, grid_id: str) -> dict[str, Any] | None:
    """Why a grid has its current colour (RiskUpdate.explanation), or None if it has no risk on record."""
    rows = executor.query("SELECT explanation FROM risk_latest FINAL WHERE grid_id = %(grid_id)s", {"grid_id": grid_id})
    if not rows or not rows[0][0]:
        return None
    return orjson.loads(rows[0][0])
