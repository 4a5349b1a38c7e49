"""The risk index maths: pure functions from windowed counts to a score, a colour and its explanation.

Nothing here does I/O except :func:`load_config`, which reads the TOML file named in the settings.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pingan.config_files import read_toml
from pingan.errors import ConfigError
from pingan.index.baseline import BaselineConfig, parse_baseline
from pingan.index.levels import Level
from pingan.index.surprise import poisson_surprise


@dataclass(frozen=True)
class TypeWeights:
    """How much one event of each type of a source weighs (before the severity multiplier)."""

    default_weight: float
    type_weights: Mapping[str, float]

    def weight(self, event_type: str) -> float:
        return self.type_weights.get(event_type, self.default_weight)


@dataclass(frozen=True)
class SourceConfig(TypeWeights):
    """One source's section of the index (``[sources.NAME]`` of risk-index.toml, or a feed's ``index``)."""

    breakpoints: tuple[tuple[float, float], ...]

    def as_document(self) -> dict[str, Any]:
        """The section as risk-index.toml writes it (a feed's section merged into the index document)."""
        return {
            "default_weight": self.default_weight,
            "type_weights": dict(self.type_weights),
            "breakpoints": [list(point) for point in self.breakpoints],
        }


@dataclass(frozen=True)
class IndexConfig:
    version: str
    yellow: float
    orange: float
    red: float
    severity_multiplier: Mapping[int, float]
    sources: Mapping[str, SourceConfig]
    # Closed windows a lower level must last before the colour steps down (escalation is immediate).
    quiet_windows: int = 2
    # Surprise (-log10 of the Poisson tail probability) to index; None: counts alone (no baseline).
    surprise_breakpoints: tuple[tuple[float, float], ...] | None = None
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    # Corroboration: events of one source (with a weight) a window needs before that source's sub-index may
    # reach orange / red. One report is never an alarm, however heavy it is.
    orange_min_events: int = 1
    red_min_events: int = 1
    # event_weight's answers: a handful of (source, type, severity) keys, asked for every window scored.
    # (Not init fields: dataclasses.replace must not hand a changed config the answers of the old one.)
    _weights: dict[tuple[str, str, int], float] = field(default_factory=dict, init=False, compare=False, repr=False)
    # _assess_source's answers by (source, weighted count, events, expectation): a window scored again after
    # one more event of one source finds the other sources' evidence unchanged (see assess).
    _source_memo: dict[tuple, tuple[float, SourceAssessment]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def event_weight(self, source: str, event_type: str, severity: int) -> float:
        key = (source, event_type, severity)
        weight = self._weights.get(key)
        if weight is None:
            source_config = self.sources.get(source)
            weight = 0.0 if source_config is None else (
                source_config.weight(event_type) * self.severity_multiplier.get(severity, 1.0)
            )  # fmt: skip
            self._weights[key] = weight
        return weight


def parse_breakpoints(where: str, raw: Any) -> tuple[tuple[float, float], ...]:
    """Piecewise-linear breakpoints ``[[value, index], ...]`` from [0, 0], strictly increasing in both columns;
    ``where`` names the table in errors. risk-index.toml's sections and the feeds' index sections both pass here."""
    try:
        points = tuple((float(x), float(y)) for x, y in raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.breakpoints must be [[value, index], ...]: {exc}") from None
    if len(points) < 2 or points[0] != (0.0, 0.0):
        raise ConfigError(f"{where}.breakpoints must start at [0, 0] and have at least two points")
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if not (x1 > x0 and y1 > y0):
            raise ConfigError(f"{where}.breakpoints must increase strictly in both columns")
    return points


def _breakpoints(section: str, raw: Any) -> tuple[tuple[float, float], ...]:
    return parse_breakpoints(section if section == "surprise" else f"sources.{section}", raw)


def parse_config(document: Mapping[str, Any]) -> IndexConfig:
    """Build and check an IndexConfig from a parsed TOML document."""
    try:
        levels = document["levels"]
        yellow, orange, red = float(levels["yellow"]), float(levels["orange"]), float(levels["red"])
        version = str(document["version"])
        severity = {int(k): float(v) for k, v in document["severity_multiplier"].items()}
        sources = {
            name: SourceConfig(
                default_weight=float(body.get("default_weight", 1.0)),
                type_weights={str(k): float(v) for k, v in body.get("type_weights", {}).items()},
                breakpoints=_breakpoints(name, body["breakpoints"]),
            )
            for name, body in document["sources"].items()
        }
        quiet_windows = int(document.get("hysteresis", {}).get("quiet_windows", 2))
        surprise = document.get("surprise")
        surprise_breakpoints = None if surprise is None else _breakpoints("surprise", surprise["breakpoints"])
        baseline = parse_baseline(document.get("baseline"))
        corroboration = document.get("corroboration", {})
        orange_min_events = int(corroboration.get("orange", 1))
        red_min_events = int(corroboration.get("red", 1))
    except KeyError as exc:
        raise ConfigError(f"risk index config is missing {exc}") from None
    if not 0 < yellow < orange < red:
        raise ConfigError("levels must satisfy 0 < yellow < orange < red")
    if not 0 <= quiet_windows <= 12:
        raise ConfigError("hysteresis.quiet_windows must be between 0 and 12")
    if not 1 <= orange_min_events <= red_min_events:
        raise ConfigError("corroboration must satisfy 1 <= orange <= red (events of one source in a window)")
    return IndexConfig(
        version, yellow, orange, red, severity, sources, quiet_windows, surprise_breakpoints, baseline,
        orange_min_events, red_min_events,
    )  # fmt: skip


def load_config(path: Path) -> IndexConfig:
    return parse_config(read_toml(path, "risk index config"))


def sub_index(weighted_count: float, breakpoints: tuple[tuple[float, float], ...]) -> float:
    """Piecewise-linear interpolation; the last segment extends beyond the last breakpoint."""
    if weighted_count <= 0:
        return 0.0
    xs = [x for x, _ in breakpoints]
    segment = min(max(bisect_right(xs, weighted_count) - 1, 0), len(breakpoints) - 2)
    (x0, y0), (x1, y1) = breakpoints[segment], breakpoints[segment + 1]
    return y0 + (weighted_count - x0) * (y1 - y0) / (x1 - x0)


def level_for(score: float, config: IndexConfig) -> Level:
    if score >= config.red:
        return Level.RED
    if score >= config.orange:
        return Level.ORANGE
    if score >= config.yellow:
        return Level.YELLOW
    return Level.GREEN


@dataclass(frozen=True)
class SourceAssessment:
    """One source's evidence in one window: how much happened, how much was expected, how surprising."""

    weighted: float
    events: int  # events of the source that weigh something
    volume_index: float  # from the source's breakpoints on the weighted count
    sub_index: float  # min(volume, surprise), held below orange / red without corroboration
    expected: float | None = None  # weighted count the baseline expected in the window (None: no baseline)
    surprise: float | None = None  # -log10 P(at least this much | expected)
    surprise_index: float | None = None
    uncorroborated: bool = False  # the sub-index was held below a band for want of events


@dataclass(frozen=True)
class Assessment:
    """A grid's risk over one window: the score, its colour, and what drove it.

    The worker judges a grid at every step with events, and only some judgements are written: the heaviest
    types are worked out from the window's counts when first asked for, not at every judgement.
    """

    score: float
    level: Level
    dominant_source: str
    window_events: int
    sources: Mapping[str, SourceAssessment] = field(default_factory=dict)
    counts: Mapping[tuple[str, str, int], int] = field(default_factory=dict)
    config: IndexConfig | None = field(default=None, compare=False, repr=False)

    @cached_property
    def sub_indices(self) -> Mapping[str, float]:
        return {source: detail.sub_index for source, detail in self.sources.items()}

    @cached_property
    def top_types(self) -> tuple[tuple[str, float, int], ...]:
        """The event types that weigh most: ("source/type", weighted count, events), heaviest first, at most 3."""
        return () if self.config is None else top_types(self.counts, self.config)


def shown_level(live: Level, closed: Sequence[Level]) -> Level:
    """The colour on the map: the live level, held up by the last closed windows (hysteresis).

    ``closed`` are the levels of the hours ending at the grid's last ``quiet_windows`` closed windows. A rise
    shows at once; a fall shows only when every one of those closed windows has fallen too. Closed windows
    are final, so the colour depends on event time only, not on when batches happened to run.
    """
    return max((live, *closed), key=lambda level: level.rank)


def top_types(counts: Mapping[tuple[str, str, int], int], config: IndexConfig, n: int = 3) -> tuple:
    totals: dict[str, list[float]] = {}
    for (source, event_type, severity), count in counts.items():
        entry = totals.setdefault(f"{source}/{event_type}", [0.0, 0])
        entry[0] += count * config.event_weight(source, event_type, severity)
        entry[1] += count
    ranked = sorted(totals.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
    return tuple((name, round(w, 3), int(c)) for name, (w, c) in ranked[:n] if w > 0)


def _evidence_by_source(
    counts: Mapping[tuple[str, str, int], int], config: IndexConfig
) -> dict[str, tuple[float, int]]:
    """Per source, in order of name: (weighted count, events that weigh something).

    Summed in order of (source, type, severity), so the same counts give the same floating-point sums however
    they were gathered (a window summed from its buckets, or slid from the one before: streams/windows.py).
    """
    weights = config._weights
    totals: dict[str, tuple[float, int]] = {}
    for key, count in sorted(counts.items()):
        weight = weights.get(key)
        if weight is None:
            weight = config.event_weight(*key)
        source = key[0]
        weighted, events = totals.get(source, (0.0, 0))
        totals[source] = (weighted + count * weight, events + (count if weight > 0 else 0))
    return totals


def shown_value(value: float) -> float:
    """A sub-index or score as reported: cut (not rounded) to 0.1, so a shown value is at a colour's threshold
    exactly when the value is. Only for display: levels and maxima are taken from the exact values."""
    return math.floor(value * 10 + 1e-9) / 10


def _corroborated(index: float, events: int, config: IndexConfig) -> float:
    """The index, held just below a band whose corroboration (events of the source) is missing."""
    if events < config.red_min_events and index >= config.red:
        index = config.red - 0.1
    if events < config.orange_min_events and index >= config.orange:
        index = config.orange - 0.1
    return index


# Per source: (expected weighted count in the window, unit weight), from pingan.index.baseline.BaselineModel.
Expectations = Mapping[str, tuple[float, float]]


# Distinct evidence remembered per index config before the memo starts again (a few MB at most).
SOURCE_MEMO_SIZE = 100_000


def _assess_source(
    weighted: float, events: int, source: str, config: IndexConfig, expectation: tuple[float, float] | None
) -> tuple[float, SourceAssessment]:
    """(the exact sub-index, the assessment as reported), remembered: the surprise costs a series or a
    continued fraction, and a grid's other sources rarely change between two of its judgements."""
    memo = config._source_memo
    key = (source, weighted, events, expectation)
    found = memo.get(key)
    if found is None:
        if len(memo) >= SOURCE_MEMO_SIZE:
            memo.clear()
        found = memo[key] = _evaluate_source(weighted, events, source, config, expectation)
    return found


def _evaluate_source(
    weighted: float, events: int, source: str, config: IndexConfig, expectation: tuple[float, float] | None
) -> tuple[float, SourceAssessment]:
    volume = sub_index(weighted, config.sources[source].breakpoints)
    if expectation is None or config.surprise_breakpoints is None:
        capped = _corroborated(volume, events, config)
        shown = SourceAssessment(
            round(weighted, 3), events, shown_value(volume), shown_value(capped), uncorroborated=capped < volume
        )
        return capped, shown
    expected, unit = expectation
    surprise = poisson_surprise(weighted / unit, expected / unit)
    surprise_index = sub_index(surprise, config.surprise_breakpoints)
    both = min(volume, surprise_index)
    capped = _corroborated(both, events, config)
    shown = SourceAssessment(
        round(weighted, 3), events, shown_value(volume), shown_value(capped), round(expected, 3), round(surprise, 2),
        shown_value(surprise_index), capped < both,
    )  # fmt: skip
    return capped, shown


def assess_source(
    weighted: float, events: int, source: str, config: IndexConfig, expectation: tuple[float, float] | None
) -> SourceAssessment:
    """A source's sub-index: the volume index, capped by the surprise index when a baseline is known, and
    held below orange / red until enough events corroborate it.

    Surprise is the Poisson tail of the weighted count in units of ``unit`` (sum w^2 / sum w), so that one
    heavy event is not taken for several independent ones. The maths uses exact values; the fields are
    rounded for display only (see :func:`shown_value`).
    """
    return _assess_source(weighted, events, source, config, expectation)[1]


def assess(
    counts: Mapping[tuple[str, str, int], int], config: IndexConfig, expectations: Expectations | None = None
) -> Assessment:
    """Score one window: the highest source sub-index (AQI style), shown cut to 0.1; the colour is the exact
    score's.

    ``expectations`` come from the baseline; without them a source's sub-index is its volume index alone.
    """
    exact: dict[str, float] = {}
    sources: dict[str, SourceAssessment] = {}
    known = config.sources
    for source, (weighted, events) in _evidence_by_source(counts, config).items():
        if source in known:
            expectation = None if expectations is None else expectations.get(source)
            exact[source], sources[source] = _assess_source(weighted, events, source, config, expectation)
    dominant, score = max(exact.items(), key=lambda item: (item[1], item[0]), default=("", 0.0))
    if score <= 0:
        dominant, score = "", 0.0
    return Assessment(
        shown_value(score), level_for(score, config), dominant, sum(counts.values()), sources, counts, config
    )
