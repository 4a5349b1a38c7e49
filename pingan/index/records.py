"""The worker's output records and their rules: a window row (how its events weigh), a risk update (why the
grid has its colour, and the message on the risk topic), and the hysteresis hold that explains a held colour.

The tables' column order and the row tuples are the storage layer's (``pingan.store.windows``,
``pingan.store.risk``); these records know nothing of ClickHouse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from pingan.index.levels import Level
from pingan.index.scoring import Assessment, IndexConfig, SourceAssessment


@dataclass(frozen=True, slots=True)
class Hold:
    """The closed window that holds a grid's colour above its live level (hysteresis)."""

    window_start: int  # epoch seconds: the hour that holds the colour starts here...
    window_end: int  # ...and ends here (it closed this long ago plus the lateness allowance)
    score: float
    level: Level
    # Epoch seconds from which the colour steps down, if the windows that close before then stay lower.
    steps_down_at: int


@dataclass(frozen=True)
class WindowRow:
    grid_id: str
    window_start: datetime
    window_seconds: int
    events: int
    weighted: float
    source_counts: Mapping[str, int]
    type_counts: Mapping[str, int]  # keyed "source/type"
    score: float
    level: str
    config_version: str
    version: int

    @classmethod
    def build(
        cls,
        grid_id: str,
        start: int,
        window_seconds: int,
        counts: Mapping[tuple[str, str, int], int],
        assessment: Assessment,
        index: IndexConfig,
        version: int,
    ) -> WindowRow:
        sources: dict[str, int] = {}
        types: dict[str, int] = {}
        weighted = 0.0
        for (source, event_type, severity), n in counts.items():
            sources[source] = sources.get(source, 0) + n
            types[f"{source}/{event_type}"] = types.get(f"{source}/{event_type}", 0) + n
            weighted += n * index.event_weight(source, event_type, severity)
        return cls(
            grid_id, datetime.fromtimestamp(start, UTC), window_seconds, sum(sources.values()), round(weighted, 3),
            sources, types, assessment.score, assessment.level.value, index.version, version,
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
        provisional: bool = False,
    ) -> RiskUpdate:
        return cls(
            grid_id, as_of, assessment.score, shown.value, previous_level or "", assessment.window_events,
            assessment.dominant_source, dict(assessment.sub_indices), config_version, version,
            assessment.level.value, assessment.top_types, dict(assessment.sources), baseline_version, hold,
            provisional,
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
