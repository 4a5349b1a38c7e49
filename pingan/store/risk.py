"""SQL of ``risk_updates`` (every change) and ``risk_latest`` (the current risk of each grid)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from pingan.store.client import Executor, Rejected, insert_isolating

if TYPE_CHECKING:
    from pingan.index.scoring import Assessment, Level, SourceAssessment
    from streams.windows import Hold

COLUMNS = (
    "grid_id", "as_of", "score", "level", "previous_level", "window_events", "dominant_source",
    "config_version", "version", "live_level", "explanation",
)  # fmt: skip


@dataclass(frozen=True)
class RiskUpdate:
    grid_id: str
    as_of: datetime
    score: float
    level: str
    previous_level: str  # "" when the grid had no risk on record
    window_events: int
    dominant_source: str
    sub_indices: Mapping[str, float]
    config_version: str
    version: int
    # The level of the hour ending now; ``level`` is what the map shows, held up by hysteresis.
    live_level: str = ""
    top_types: tuple[tuple[str, float, int], ...] = ()
    sources: Mapping[str, SourceAssessment] = field(default_factory=dict)
    baseline_version: str = ""  # "" when scored without a baseline; "prior" before any history was learned
    # The closed window that holds ``level`` above ``live_level`` (hysteresis), if one does.
    hold: Hold | None = None
    # Decided at the end of a batch, before its step of event time ended: the map shows it, the log does not.
    provisional: bool = False

    @property
    def held(self) -> bool:
        return bool(self.live_level) and self.live_level != self.level

    def explanation(self) -> dict[str, Any]:
        """Why the grid has this colour: sources by sub-index with observed vs expected, the heaviest event
        types, hysteresis, and the versions of the config and the baseline."""
        return {
            "sources": [
                {"source": source, "sub_index": value, **self._evidence(source)}
                for source, value in sorted(self.sub_indices.items(), key=lambda item: (-item[1], item[0]))
            ],
            "top_types": [{"type": name, "weighted": w, "events": n} for name, w, n in self.top_types],
            "live_level": self.live_level,
            "held_by_hysteresis": self.held,
            "held_by": self._hold(),
            "config_version": self.config_version,
            "baseline_version": self.baseline_version or None,
        }

    def _hold(self) -> dict[str, Any] | None:
        hold = self.hold
        if hold is None or not self.held:
            return None
        return {
            "window_start": datetime.fromtimestamp(hold.window_start, UTC).isoformat(),
            "window_end": datetime.fromtimestamp(hold.window_end, UTC).isoformat(),
            "score": hold.score,
            "level": hold.level.value,
            "steps_down_at": datetime.fromtimestamp(hold.steps_down_at, UTC).isoformat(),
        }

    def _evidence(self, source: str) -> dict[str, Any]:
        detail = self.sources.get(source)
        if detail is None:
            return {}
        return {
            "observed": detail.weighted,
            "events": detail.events,
            "expected": detail.expected,
            "surprise": detail.surprise,
            "volume_index": detail.volume_index,
            "surprise_index": detail.surprise_index,
            "uncorroborated": detail.uncorroborated,
        }

    @classmethod
    def build(
        cls,
        grid_id: str,
        as_of: datetime,
        assessment: Assessment,
        shown: Level,
        previous_level: str | None,
        config_version: str,
        version: int,
        baseline_version: str = "",
        *,
        hold: Hold | None = None,
    ) -> RiskUpdate:
        return cls(
            grid_id, as_of, assessment.score, shown.value, previous_level or "", assessment.window_events,
            assessment.dominant_source, dict(assessment.sub_indices), config_version, version,
            assessment.level.value, assessment.top_types, dict(assessment.sources), baseline_version, hold,
        )  # fmt: skip

    def as_row(self) -> tuple[Any, ...]:
        return (
            self.grid_id, int(self.as_of.timestamp()), self.score, self.level, self.previous_level,
            self.window_events, self.dominant_source, self.config_version, self.version, self.live_level,
            orjson.dumps(self.explanation()).decode(),
        )  # fmt: skip

    def to_json(self) -> bytes:
        """The message published on the risk topic."""
        return orjson.dumps(
            {
                "grid_id": self.grid_id,
                "as_of": self.as_of,
                "score": self.score,
                "level": self.level,
                "previous_level": self.previous_level or None,
                "window_events": self.window_events,
                "dominant_source": self.dominant_source or None,
                "sub_indices": self.sub_indices,
                "config_version": self.config_version,
                "version": self.version,
                "provisional": self.provisional,
                "explanation": self.explanation(),
            }
        )


def insert(executor: Executor, updates: Sequence[RiskUpdate], live: Sequence[RiskUpdate] = ()) -> Rejected:
    """Decided updates go to the log and the latest table; live ones (provisional, or a step re-asserting what
    it decided over one) to the latest table only. Returns the updates ClickHouse refused, the others stored."""
    rejected = insert_isolating(executor, "risk_updates", COLUMNS, updates, RiskUpdate.as_row)
    return rejected + insert_isolating(executor, "risk_latest", COLUMNS, [*updates, *live], RiskUpdate.as_row)


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
