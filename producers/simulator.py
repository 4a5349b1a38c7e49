"""The simulated city: background events from all four feeds, injected incident bursts, and a runner.

:class:`CitySimulator` is pure and deterministic: ``events_between(start, end)`` returns the envelope dicts
(valid for ``pingan.schemas.envelope.parse_event``) whose event time falls in ``(start, end]``. Time is cut into
one-minute slots, and a slot's events depend only on (seed, source, slot), so the answer does not depend on
how a run is sliced into ticks: ``events_between(a, c) == events_between(a, b) + events_between(b, c)``
(sorted), and two simulators with the same seed and nonce produce the same events.

Default district-wide rates at ``rate=1`` (means over a day; see ``DAILY_EVENTS``):

=========== ============= ============ ==============================================================
source       per day       per second   why
=========== ============= ============ ==============================================================
call110      2,000         0.023        a 600k-resident district's share of a city's 5-25k calls/day
camera       259,200       3.0          the high-rate feed: mostly crowd-density readings, rare alarms
checkpoint   129,600       1.5          vehicle passes at 24 checkpoints, ~0.2% flagged
app_report   300           0.0035       grid workers and citizens, a few hundred a day
=========== ============= ============ ==============================================================

About 4.5 events/s in all, times a diurnal cycle (China time, UTC+8): quiet 02:00-06:00 (a fifth to a
third of the mean), rush hours at checkpoints, the evening peak (19:00-21:00, ~1.5x) for calls and
cameras, daytime for grid workers' reports. Within a source, events go to grids in proportion to weights
from population and grid type (the railway station has few residents but many 110 calls and cameras).
At these rates almost every grid stays green; :func:`demo_bursts` adds incidents that turn a few grids
yellow, orange and red within a minute.

Plates, phone numbers and grid workers' ids are pseudonymised with the settings' key before they leave
the simulator, exactly as a real producer must.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import signal
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pingan.clock import Clock, SystemClock
from pingan.grids import Grid, GridRegistry
from pingan.producers.kafka import EventProducer
from pingan.producers.pseudonym import pseudonymise
from pingan.schemas.payloads import (
    AppReportCategory,
    Call110Category,
    CameraAnalytic,
)
from pingan.settings import Settings
from pingan.topics import ensure_topics

__all__ = [
    "DAILY_EVENTS",
    "SOURCES",
    "Burst",
    "Checkpoint",
    "CitySimulator",
    "SimulationReport",
    "demo_bursts",
    "run_simulation",
    "simulate_forever",
]

log = logging.getLogger(__name__)

SOURCES: Final = ("call110", "camera", "checkpoint", "app_report")
DAILY_EVENTS: Final[Mapping[str, float]] = {
    "call110": 2_000.0,
    "camera": 3.0 * 86_400,
    "checkpoint": 1.5 * 86_400,
    "app_report": 300.0,
}
SLOT_MS: Final = 60_000
LOCAL_UTC_OFFSET_H: Final = 8  # China Standard Time, no daylight saving
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Hourly activity by local hour (0..23), normalised to a mean of 1 below.
_DIURNAL_RAW: Final[Mapping[str, tuple[float, ...]]] = {
    "call110": (0.55, 0.45, 0.35, 0.28, 0.25, 0.3, 0.45, 0.7, 0.95, 1.05, 1.1, 1.15,
                1.1, 1.05, 1.05, 1.1, 1.15, 1.25, 1.4, 1.55, 1.6, 1.5, 1.2, 0.8),
    "camera": (0.3, 0.2, 0.15, 0.12, 0.12, 0.2, 0.5, 0.9, 1.2, 1.2, 1.2, 1.3,
               1.3, 1.2, 1.2, 1.2, 1.3, 1.5, 1.7, 1.8, 1.7, 1.4, 0.9, 0.5),
    "checkpoint": (0.25, 0.15, 0.1, 0.1, 0.12, 0.3, 0.8, 1.7, 1.8, 1.3, 1.1, 1.1,
                   1.1, 1.1, 1.1, 1.2, 1.4, 1.8, 1.7, 1.3, 1.0, 0.8, 0.6, 0.4),
    "app_report": (0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1.6, 2.0, 2.0, 1.8,
                   1.2, 1.4, 1.8, 1.9, 1.7, 1.3, 1.0, 0.8, 0.6, 0.4, 0.25, 0.15),
}  # fmt: skip
DIURNAL: Final[Mapping[str, tuple[float, ...]]] = {
    source: tuple(v * 24 / sum(values) for v in values) for source, values in _DIURNAL_RAW.items()
}

# --- how grids differ ---------------------------------------------------------------------------------------
# Visitors and passers-by a grid draws on top of its residents, in "typical urban grids" (~600 people).
_EXTRA_ACTIVITY = {"commercial": 2.5, "transport_hub": 10.0, "school_zone": 0.5, "industrial": 0.8, "scenic": 3.0}
_CALLS_PER_CAPITA = {"rural": 0.7}
_CAMERAS = {
    "urban": 4,
    "commercial": 6,
    "transport_hub": 8,
    "school_zone": 5,
    "industrial": 3,
    "rural": 1,
    "scenic": 4,
}
_CAMERA_ACTIVITY = {"commercial": 1.2, "transport_hub": 1.5, "rural": 0.8}
_CROWD_BASE = {"urban": 30, "commercial": 150, "transport_hub": 400, "school_zone": 120, "industrial": 20,
               "rural": 8, "scenic": 200}  # fmt: skip

# ~11% crime and public order, ~30% help and non-police (the share Guangzhou reports as invalid or diverted).
_CALL110_MIX = {"criminal": 0.06, "public_order": 0.05, "traffic": 0.24, "fire": 0.02, "dispute": 0.33,
                "help": 0.12, "non_police": 0.18}  # fmt: skip
_CALL110_BY_TYPE = {
    "transport_hub": {"criminal": 2.0, "public_order": 2.5, "help": 1.5, "dispute": 0.7},
    "commercial": {"criminal": 1.8, "public_order": 1.5, "dispute": 1.2},
    "school_zone": {"traffic": 1.5, "public_order": 1.2},
    "rural": {"traffic": 1.3, "dispute": 1.3, "fire": 1.5, "criminal": 0.6, "help": 1.2},
    "industrial": {"fire": 2.0, "criminal": 1.2, "traffic": 1.3},
    "scenic": {"help": 2.5, "traffic": 1.3},
}
_CALL110_SEVERITY = {
    "criminal": {3: 0.5, 4: 0.4, 5: 0.1},
    "public_order": {2: 0.4, 3: 0.45, 4: 0.15},
    "traffic": {2: 0.5, 3: 0.4, 4: 0.1},
    "fire": {3: 0.5, 4: 0.35, 5: 0.15},
    "dispute": {1: 0.3, 2: 0.5, 3: 0.2},
    "help": {1: 0.6, 2: 0.4},
    "non_police": {1: 1.0},
}
# Crowd-density readings dominate; alarms are rare, or every grid would be yellow all day.
_CAMERA_MIX = {"crowd_density": 0.973, "intrusion": 0.01, "fall": 0.005, "fight": 0.002, "smoke_fire": 0.002,
               "watchlist_hit": 0.008}  # fmt: skip
_CAMERA_BY_TYPE = {
    "transport_hub": {"watchlist_hit": 3.0, "fight": 1.5},
    "industrial": {"intrusion": 4.0, "smoke_fire": 3.0, "crowd_density": 0.3},
    "rural": {"smoke_fire": 4.0, "intrusion": 2.0, "crowd_density": 0.3},  # straw burning, orchards
    "school_zone": {"fall": 1.5, "fight": 1.5},
    "commercial": {"crowd_density": 1.2, "fight": 1.3},
}
_CAMERA_SEVERITY = {
    "intrusion": {2: 0.6, 3: 0.4},
    "fall": {2: 0.5, 3: 0.5},
    "fight": {3: 0.5, 4: 0.5},
    "smoke_fire": {3: 0.6, 4: 0.3, 5: 0.1},
    "watchlist_hit": {3: 0.6, 4: 0.4},
}
_APP_MIX = {"dispute": 0.30, "hazard": 0.30, "street_order": 0.35, "one_click_alarm": 0.05}
_APP_SEVERITY = {
    "dispute": {1: 0.3, 2: 0.5, 3: 0.2},
    "hazard": {1: 0.3, 2: 0.5, 3: 0.2},
    "street_order": {1: 0.7, 2: 0.3},
    "one_click_alarm": {3: 0.4, 4: 0.5, 5: 0.1},
}
_APP_TEXT = {
    "dispute": ("邻里因噪音发生纠纷", "商户与顾客因退款发生争执", "家庭矛盾需调解", "物业费纠纷"),
    "hazard": ("井盖缺失", "楼道堆放杂物存在消防隐患", "路灯损坏", "护栏松动", "电动车楼道充电"),
    "street_order": ("占道经营", "乱停乱放", "乱贴小广告", "垃圾未及时清运"),
    "one_click_alarm": ("一键报警：需要帮助", "一键报警：有人可疑尾随"),
}
_VEHICLES = {
    "boundary": {"car": 0.65, "truck": 0.25, "bus": 0.05, "motorcycle": 0.03, "other": 0.02},
    "city": {"car": 0.78, "motorcycle": 0.10, "truck": 0.05, "bus": 0.04, "other": 0.03},
    "station": {"pedestrian": 1.0},
}
_FLAGGED = {"boundary": 0.003, "city": 0.0015, "station": 0.002}
_CHECKPOINT_WEIGHT = {"boundary": 3.0, "city": 1.5, "station": 2.0}
_PLATE_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_LOCAL_VEHICLES = 120_000

_BURST_TYPES = {
    "call110": ("public_order", "criminal", "dispute"),
    "camera": ("fight", "intrusion"),
    "checkpoint": ("flagged_pass",),
    "app_report": ("one_click_alarm", "dispute"),
}
_BURST_SEVERITY = {"call110": 4, "camera": 4, "checkpoint": 3, "app_report": 4}
_TYPES = {
    "call110": frozenset(c.value for c in Call110Category),
    "camera": frozenset(a.value for a in CameraAnalytic),
    "checkpoint": frozenset({"pass", "flagged_pass"}),
    "app_report": frozenset(c.value for c in AppReportCategory),
}


def _to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("the simulator needs tz-aware datetimes")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def diurnal(source: str, ms: int) -> float:
    """Activity multiplier (mean 1 over a day) at an instant, interpolated between hour midpoints."""
    hours = (ms / 3_600_000 + LOCAL_UTC_OFFSET_H - 0.5) % 24
    low = int(hours)
    frac = hours - low
    profile = DIURNAL[source]
    return profile[low] * (1 - frac) + profile[(low + 1) % 24] * frac


def poisson(lam: float, rng: random.Random) -> int:
    """A Poisson draw: Knuth's product method for small means, Hörmann's PTRS above 10."""
    if lam <= 0:
        return 0
    if lam < 10:
        limit, product, count = math.exp(-lam), rng.random(), 0
        while product > limit:
            product *= rng.random()
            count += 1
        return count
    # W. Hörmann, "The transformed rejection method for generating Poisson random variables" (1993).
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        if us <= 0.0 or v <= 0.0:  # a draw of exactly 0.0 (p = 2**-53) would divide by zero or log(0)
            continue
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= v_r:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b) <= -lam + k * loglam - math.lgamma(k + 1):
            return k


def _pick(weights: Mapping[str, float], rng: random.Random) -> str:
    total = sum(weights.values())
    point = rng.random() * total
    for key, weight in weights.items():
        point -= weight
        if point < 0:
            return key
    return list(weights)[-1]  # rounding left a sliver at the end


def _mix(base: Mapping[str, float], adjust: Mapping[str, float] | None) -> dict[str, float]:
    if not adjust:
        return dict(base)
    return {key: weight * adjust.get(key, 1.0) for key, weight in base.items()}


@dataclass(frozen=True)
class Checkpoint:
    """A fixed checkpoint: a 公安检查站 on a road into the district, an 电子卡口 in town, or the station gate."""

    checkpoint_id: str
    grid_id: str
    lon: float
    lat: float
    kind: str  # "boundary", "city" or "station"


@dataclass(frozen=True)
class Burst:
    """An incident: ``count`` events in one grid, front-loaded over ``duration_s`` seconds from ``start``.

    Calls and alarms come thick right after an incident and then taper off: event i lands at
    ``start + duration * u_i**2`` with ``u_i`` uniform in ``[i/count, (i+1)/count)``.
    """

    grid_id: str
    start: datetime
    duration_s: float
    count: int
    source: str = "call110"
    types: tuple[str, ...] = ()
    severity: int | None = None


@dataclass(frozen=True)
class _Sampler:
    """Weighted choice of a grid by bisection over cumulative weights."""

    items: tuple[int, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, weights: Sequence[float]) -> _Sampler:
        items, cumulative, total = [], [], 0.0
        for index, weight in enumerate(weights):
            if weight > 0:
                total += weight
                items.append(index)
                cumulative.append(total)
        return cls(tuple(items), tuple(cumulative))

    @property
    def total(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def draw(self, rng: random.Random) -> int:
        position = bisect.bisect_right(self.cumulative, rng.random() * self.total)
        return self.items[min(position, len(self.items) - 1)]


class CitySimulator:
    """Deterministic events for a grid registry. Pure: no I/O, no clock, no global random state."""

    def __init__(
        self,
        registry: GridRegistry,
        *,
        seed: int = 0,
        rate: float = 1.0,
        pseudonym_key: bytes,
        nonce: str | None = None,
        daily: Mapping[str, float] | None = None,
    ) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        self.registry = registry
        self.seed = seed
        self.rate = rate
        self.nonce = nonce if nonce is not None else f"s{seed}".replace("-", "m")
        if not self.nonce or not self.nonce.isascii() or not self.nonce.isalnum() or len(self.nonce) > 24:
            raise ValueError("nonce must be 1-24 ASCII letters or digits (it becomes part of event ids)")
        self.daily = {**DAILY_EVENTS, **(daily or {})}
        unknown = set(self.daily) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown sources in daily rates: {sorted(unknown)}")
        self._key = pseudonym_key
        pseudonymise("probe", pseudonym_key)  # fail now on a bad key, not on the first plate
        self._grids = registry.grids
        self._grid_index = {grid.grid_id: index for index, grid in enumerate(self._grids)}
        self._cameras = tuple(self._camera_count(grid) for grid in self._grids)
        self.checkpoints = self._place_checkpoints()
        self._checkpoints_in = {cp.grid_id: cp for cp in reversed(self.checkpoints)}
        self._samplers = {
            "call110": _Sampler.of([self._call_weight(g) for g in self._grids]),
            "camera": _Sampler.of(
                [n * _CAMERA_ACTIVITY.get(g.grid_type, 1.0) for g, n in zip(self._grids, self._cameras, strict=True)]
            ),
            "checkpoint": _Sampler.of([_CHECKPOINT_WEIGHT[cp.kind] for cp in self.checkpoints]),
            "app_report": _Sampler.of([self._report_weight(g) for g in self._grids]),
        }
        self._locations: dict[str, tuple[float, float]] = {}
        self._slot_cache: dict[tuple[str, int], list[tuple[int, str, dict[str, Any]]]] = {}
        self._bursts: list[Burst] = []
        self._burst_events: list[tuple[int, str, dict[str, Any]]] = []  # sorted by (time, event id)

    # --- static layout --------------------------------------------------------------------------------

    @staticmethod
    def _call_weight(grid: Grid) -> float:
        residents = grid.population / 600 * _CALLS_PER_CAPITA.get(grid.grid_type, 1.0)
        return residents + _EXTRA_ACTIVITY.get(grid.grid_type, 0.0)

    @staticmethod
    def _report_weight(grid: Grid) -> float:
        # Grid workers file most reports, and there is about one per grid whatever its size.
        return 0.6 + grid.population / 1500 + (0.8 if grid.grid_type == "commercial" else 0.0)

    def _camera_count(self, grid: Grid) -> int:
        base = _CAMERAS.get(grid.grid_type, 2)
        wobble = random.Random(f"{self.seed}/cameras/{grid.grid_id}").randint(-1, 1)
        return max(1, base + wobble)

    def _place_checkpoints(self) -> tuple[Checkpoint, ...]:
        rng = random.Random(f"{self.seed}/checkpoints")
        grids = self._grids
        min_lon, min_lat, max_lon, max_lat = self.registry.bbox
        centre = ((min_lon + max_lon) / 2, (min_lat + max_lat) / 2)
        chosen: list[tuple[str, Grid]] = []
        # Roads into the district: the outermost rural grid in each of eight bearings.
        outer = [g for g in grids if g.grid_type in ("rural", "industrial", "scenic")]

        def sector(grid: Grid) -> int:
            bearing = math.atan2(grid.centroid[1] - centre[1], grid.centroid[0] - centre[0])
            return int((bearing + math.pi) / (2 * math.pi) * 8) % 8

        for number in range(8):
            in_sector = [g for g in outer if sector(g) == number]
            if in_sector:
                far = max(in_sector, key=lambda g: (math.dist(g.centroid, centre), g.grid_id))
                chosen.append(("boundary", far))
        # Gates of the railway station, then electronic bayonets at busy urban grids.
        hubs = sorted((g for g in grids if g.grid_type == "transport_hub"), key=lambda g: g.grid_id)
        chosen.extend(("station", g) for g in hubs[:2])
        busy = sorted((g for g in grids if g.grid_type in ("commercial", "urban")), key=lambda g: g.grid_id)
        chosen.extend(("city", g) for g in rng.sample(busy, min(14, len(busy))))
        checkpoints = []
        for number, (kind, grid) in enumerate(chosen, start=1):
            lon, lat = self._point_in(grid, random.Random(f"{self.seed}/checkpoint/{number}"))
            checkpoints.append(Checkpoint(f"KK-{number:02d}", grid.grid_id, lon, lat, kind))
        return tuple(checkpoints)

    def _point_in(self, grid: Grid, rng: random.Random) -> tuple[float, float]:
        """A point, rounded to 6 decimals (~0.1 m), that the registry locates to this very grid."""
        min_lon, min_lat, max_lon, max_lat = grid.bbox
        for _ in range(1000):
            lon = round(rng.uniform(min_lon, max_lon), 6)
            lat = round(rng.uniform(min_lat, max_lat), 6)
            if self.registry.locate(lon, lat) is grid:
                return lon, lat
        return round(grid.centroid[0], 6), round(grid.centroid[1], 6)  # a sliver of a grid; never in citygen's

    def _camera_location(self, camera_id: str, grid: Grid) -> tuple[float, float]:
        found = self._locations.get(camera_id)
        if found is None:
            found = self._locations[camera_id] = self._point_in(grid, random.Random(f"{self.seed}/{camera_id}"))
        return found

    # --- rates --------------------------------------------------------------------------------------------

    def mean_rate(self, source: str) -> float:
        """District-wide events per second of a source, averaged over a day (bursts excluded)."""
        return self.daily[source] / 86_400 * self.rate

    def grid_share(self, source: str) -> dict[str, float]:
        """The fraction of a source's background events that each grid gets (grids with none are left out)."""
        sampler = self._samplers[source]
        shares: dict[str, float] = {}
        previous = 0.0
        for index, cumulative in zip(sampler.items, sampler.cumulative, strict=True):
            grid_id = self.checkpoints[index].grid_id if source == "checkpoint" else self._grids[index].grid_id
            shares[grid_id] = shares.get(grid_id, 0.0) + (cumulative - previous) / sampler.total
            previous = cumulative
        return shares

    def rate_at(self, source: str, moment: datetime) -> float:
        """District-wide events per second of a source at an instant (diurnal cycle applied)."""
        return self.mean_rate(source) * diurnal(source, _to_ms(moment))

    # --- events ---------------------------------------------------------------------------------------------

    def events_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every event (background and bursts) with event time in (start, end], in time order."""
        start_ms, end_ms = _to_ms(start), _to_ms(end)
        if end_ms <= start_ms:
            return []
        found: list[tuple[int, str, dict[str, Any]]] = []
        for slot in range(start_ms // SLOT_MS, (end_ms - 1) // SLOT_MS + 1):
            for source in SOURCES:
                found.extend(e for e in self._slot(source, slot) if start_ms < e[0] <= end_ms)
        low = bisect.bisect_right(self._burst_events, (start_ms, "\uffff"))
        high = bisect.bisect_right(self._burst_events, (end_ms, "\uffff"))
        found.extend(self._burst_events[low:high])
        found.sort(key=lambda e: (e[0], e[1]))
        # Copies: the slot cache keeps the originals, and a caller may edit what it gets.
        return [
            {**event, "location": dict(event["location"]), "payload": dict(event["payload"])} for *_, event in found
        ]

    def _slot(self, source: str, slot: int) -> list[tuple[int, str, dict[str, Any]]]:
        cached = self._slot_cache.get((source, slot))
        if cached is not None:
            return cached
        rng = random.Random(f"{self.seed}/{source}/{slot}")
        base_ms = slot * SLOT_MS
        lam = self.mean_rate(source) * SLOT_MS / 1000 * diurnal(source, base_ms + SLOT_MS // 2)
        sampler = self._samplers[source]
        count = poisson(lam, rng) if sampler.total > 0 else 0
        times = sorted(base_ms + int(rng.random() * SLOT_MS) for _ in range(count))
        events = []
        for n, at in enumerate(times):
            event_id = f"sim-{self.nonce}-{source}-{slot}-{n}"
            event = self._build(source, sampler.draw(rng), at, event_id, rng, None, None)
            events.append((at, event_id, event))
        if len(self._slot_cache) > 64:  # a runner moves forward: old slots are not asked for again
            self._slot_cache.clear()
        self._slot_cache[(source, slot)] = events
        return events

    def _build(
        self,
        source: str,
        index: int,
        at: int,
        event_id: str,
        rng: random.Random,
        forced_type: str | None,
        forced_severity: int | None,
    ) -> dict[str, Any]:
        if source == "checkpoint":
            return self._checkpoint_event(self.checkpoints[index], at, event_id, rng, forced_type, forced_severity)
        grid = self._grids[index]
        if source == "call110":
            return self._call110_event(grid, at, event_id, rng, forced_type, forced_severity)
        if source == "camera":
            return self._camera_event(grid, at, event_id, rng, forced_type, forced_severity)
        return self._app_event(grid, at, event_id, rng, forced_type, forced_severity)

    @staticmethod
    def _envelope(
        event_id: str,
        source: str,
        event_type: str,
        severity: int,
        at: int,
        grid: Grid,
        location: tuple[float, float],
        payload: dict[str, Any],
        device_id: str | None = None,
    ) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "event_id": event_id,
            "source": source,
            "type": event_type,
            "severity": severity,
            "event_time": _iso(at),
            "location": {"lon": location[0], "lat": location[1]},
            "grid_id": grid.grid_id,
            "schema_version": 1,
            "payload": payload,
        }
        if device_id is not None:
            envelope["device_id"] = device_id
        return envelope

    def _call110_event(
        self, grid: Grid, at: int, event_id: str, rng: random.Random, kind: str | None, severity: int | None
    ) -> dict[str, Any]:
        category = kind or _pick(_mix(_CALL110_MIX, _CALL110_BY_TYPE.get(grid.grid_type)), rng)
        level = severity or int(_pick({str(k): v for k, v in _CALL110_SEVERITY[category].items()}, rng))
        payload: dict[str, Any] = {
            "incident_id": event_id.replace("sim-", "JQ-", 1),
            "category": category,
            "priority": 1 if level >= 4 else 2 if level == 3 else 3,
            "reported_at": _iso(at - rng.randint(20_000, 120_000)),  # the call, before the incident record
        }
        if category != "non_police":  # non-police calls are diverted, not dispatched
            payload["dispatched_at"] = _iso(at)
        return self._envelope(event_id, "call110", category, level, at, grid, self._point_in(grid, rng), payload)

    def _camera_event(
        self, grid: Grid, at: int, event_id: str, rng: random.Random, kind: str | None, severity: int | None
    ) -> dict[str, Any]:
        index = self._grid_index[grid.grid_id]
        camera_id = f"CAM-{grid.grid_id}-{rng.randrange(self._cameras[index]) + 1:02d}"
        analytic = kind or _pick(_mix(_CAMERA_MIX, _CAMERA_BY_TYPE.get(grid.grid_type)), rng)
        if analytic == "crowd_density":
            typical = _CROWD_BASE.get(grid.grid_type, 30) * diurnal("camera", at)
            count = max(1, int(typical * rng.lognormvariate(0, 0.4)))
            level = 1 if count < 2.0 * typical else 2 if count < 3.0 * typical else 3
            confidence = rng.uniform(0.85, 0.99)
        else:
            count = rng.randint(2, 6) if analytic == "fight" else rng.randint(1, 3) if analytic == "intrusion" else 1
            level = int(_pick({str(k): v for k, v in _CAMERA_SEVERITY[analytic].items()}, rng))
            confidence = rng.uniform(0.55, 0.98)
        payload = {"camera_id": camera_id, "analytic": analytic, "confidence": round(confidence, 3), "count": count}
        location = self._camera_location(camera_id, grid)
        return self._envelope(event_id, "camera", analytic, severity or level, at, grid, location, payload, camera_id)

    def _checkpoint_event(
        self,
        checkpoint: Checkpoint,
        at: int,
        event_id: str,
        rng: random.Random,
        kind: str | None,
        severity: int | None,
    ) -> dict[str, Any]:
        grid = self._grids[self._grid_index[checkpoint.grid_id]]
        flagged = kind == "flagged_pass" if kind else rng.random() < _FLAGGED[checkpoint.kind]
        vehicle = _pick(_VEHICLES[checkpoint.kind], rng)
        payload: dict[str, Any] = {
            "checkpoint_id": checkpoint.checkpoint_id,
            "direction": "in" if rng.random() < 0.5 else "out",
            "flagged": flagged,
            "vehicle_class": vehicle,
        }
        if vehicle != "pedestrian":
            payload["plate_hash"] = pseudonymise(self._plate(rng), self._key)
        level = severity or ((4 if rng.random() < 0.2 else 3) if flagged else 1)
        return self._envelope(
            event_id, "checkpoint", "flagged_pass" if flagged else "pass", level, at, grid,
            (checkpoint.lon, checkpoint.lat), payload, checkpoint.checkpoint_id,
        )  # fmt: skip

    @staticmethod
    def _plate(rng: random.Random) -> str:
        # Most passes are by local vehicles, and a few of those (commuters) pass again and again.
        if rng.random() < 0.8:
            number = int(rng.random() ** 2 * _LOCAL_VEHICLES)
            prefix = "川A"
        else:
            number = rng.randrange(34**5)
            prefix = "川" + "ABCDEFHJKLMQRSTUVWXYZ"[number % 21]
        chars = []
        for _ in range(5):
            number, digit = divmod(number, len(_PLATE_CHARS))
            chars.append(_PLATE_CHARS[digit])
        return prefix + "·" + "".join(chars)

    def _app_event(
        self, grid: Grid, at: int, event_id: str, rng: random.Random, kind: str | None, severity: int | None
    ) -> dict[str, Any]:
        category = kind or _pick(_APP_MIX, rng)
        citizen = category == "one_click_alarm" or rng.random() < 0.25
        if citizen:
            reporter = pseudonymise(f"1{rng.randrange(3, 10)}{rng.randrange(10**9):09d}", self._key)  # a phone
        else:
            reporter = pseudonymise(f"GW-{grid.grid_id}-{rng.randint(1, 2)}", self._key)  # 1-2 workers per grid
        level = severity or int(_pick({str(k): v for k, v in _APP_SEVERITY[category].items()}, rng))
        payload = {
            "report_id": event_id.replace("sim-", "RPT-", 1),
            "reporter_role": "citizen" if citizen else "grid_worker",
            "reporter_id": reporter,
            "category": category,
            "text": rng.choice(_APP_TEXT[category]),
            "photo_count": 0 if category == "one_click_alarm" else rng.randint(0, 4),
        }
        return self._envelope(event_id, "app_report", category, level, at, grid, self._point_in(grid, rng), payload)

    # --- bursts -------------------------------------------------------------------------------------------

    def inject_burst(
        self,
        grid_id: str,
        start: datetime,
        duration_s: float,
        count: int,
        source: str = "call110",
        types: Sequence[str] | None = None,
        severity: int | None = None,
    ) -> Burst:
        """Add an incident; its events are part of ``events_between`` from now on. Returns the burst."""
        default = _BURST_TYPES.get(source, ())
        burst = Burst(grid_id, start, float(duration_s), count, source, tuple(types or default), severity)
        self.add_burst(burst)
        return burst

    def add_burst(self, burst: Burst) -> None:
        grid_index = self._grid_index.get(burst.grid_id)
        if grid_index is None:
            raise ValueError(f"grid {burst.grid_id!r} is not in the registry")
        if burst.source not in SOURCES:
            raise ValueError(f"source {burst.source!r} is not one of {', '.join(SOURCES)}")
        types = burst.types or _BURST_TYPES[burst.source]
        bad = [t for t in types if t not in _TYPES[burst.source]]
        if bad:
            raise ValueError(f"{bad} are not {burst.source} types; known: {sorted(_TYPES[burst.source])}")
        if burst.count < 1 or not burst.duration_s > 0:
            raise ValueError("a burst needs count >= 1 and duration_s > 0")
        if burst.severity is not None and not 1 <= burst.severity <= 5:
            raise ValueError("severity must be 1..5")
        number = len(self._bursts)
        self._bursts.append(burst)
        rng = random.Random(f"{self.seed}/burst/{number}")
        start_ms = _to_ms(burst.start)
        index = grid_index
        if burst.source == "checkpoint":
            index = self._checkpoint_for(burst.grid_id, number)
        severity = burst.severity or _BURST_SEVERITY[burst.source]
        for i in range(burst.count):
            u = (i + rng.random()) / burst.count
            at = start_ms + int(burst.duration_s * 1000 * u * u)
            event_id = f"sim-{self.nonce}-burst{number}-{i}"
            event = self._build(burst.source, index, at, event_id, rng, types[i % len(types)], severity)
            bisect.insort(self._burst_events, (at, event_id, event), key=lambda e: (e[0], e[1]))

    def _checkpoint_for(self, grid_id: str, number: int) -> int:
        """The index of a checkpoint in the grid; a temporary one (治安卡点) is set up if there is none."""
        existing = self._checkpoints_in.get(grid_id)
        if existing is not None:
            return self.checkpoints.index(existing)
        grid = self._grids[self._grid_index[grid_id]]
        lon, lat = self._point_in(grid, random.Random(f"{self.seed}/temporary/{number}"))
        temporary = Checkpoint(f"KK-T{number:02d}", grid_id, lon, lat, "city")
        self.checkpoints = (*self.checkpoints, temporary)
        self._checkpoints_in[grid_id] = temporary
        return len(self.checkpoints) - 1  # background sampling keeps its own indices: only fixed ones

    @property
    def bursts(self) -> tuple[Burst, ...]:
        return tuple(self._bursts)

    def forget_before(self, moment: datetime) -> None:
        """Drop burst events at or before ``moment``: a runner never asks for them again."""
        cut = bisect.bisect_right(self._burst_events, (_to_ms(moment), "\uffff"))
        del self._burst_events[:cut]


def demo_bursts(registry: GridRegistry, start: datetime, *, round_: int = 0) -> list[Burst]:
    """Incidents that colour the demo map within a minute of ``start``.

    With the shipped risk-index config: a residential grid goes yellow then orange (110 disputes), a school
    zone and a commercial grid go red (camera fights; thefts and one-click alarms), a transport hub yellow
    (flagged passes). Events are front-loaded (see :class:`Burst`), so each grid passes the yellow line in
    its first minute. ``round_`` rotates through candidate grids so repeated rounds light up other places.
    """

    def pick(grid_type: str, *, by_population: bool = False) -> Grid | None:
        found = [g for g in registry.grids if g.grid_type == grid_type]
        if not found:
            return None
        found.sort(key=lambda g: (-g.population, g.grid_id) if by_population else (g.grid_id,))
        return found[(round_ * 7) % len(found)]

    plan: list[Burst] = []
    residential = pick("urban", by_population=True)
    if residential is not None:  # a dispute in a crowded compound that turns into a brawl
        plan.append(Burst(residential.grid_id, start, 900, 12, "call110", ("public_order", "dispute"), 2))
    school = pick("school_zone")
    if school is not None:  # a fight outside a school gate, seen by its cameras
        plan.append(Burst(school.grid_id, start, 900, 20, "camera", ("fight", "intrusion"), 4))
    commercial = pick("commercial")
    if commercial is not None:  # a theft ring working a shopping street: calls and one-click alarms
        plan.append(Burst(commercial.grid_id, start, 1200, 6, "call110", ("criminal",), 4))
        plan.append(Burst(commercial.grid_id, start, 1200, 4, "app_report", ("one_click_alarm",), 4))
    hub = pick("transport_hub")
    if hub is not None:  # watch-listed travellers turning up at the station gate
        plan.append(Burst(hub.grid_id, start, 120, 3, "checkpoint", ("flagged_pass",), 4))
    return plan


@dataclass
class SimulationReport:
    """What a run sent."""

    started: datetime
    ended: datetime | None = None
    sent: int = 0
    ticks: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    bursts: int = 0


async def _pause(stop_event: asyncio.Event | None, seconds: float) -> bool:
    """Sleep, or return early (True) when the stop event is set."""
    if stop_event is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def run_simulation(
    settings: Settings,
    registry: GridRegistry,
    *,
    clock: Clock | None = None,
    rate: float | None = None,
    duration_s: float | None = None,
    bursts: bool | Sequence[Burst] = True,
    stop_event: asyncio.Event | None = None,
    tick_s: float = 1.0,
    seed: int = 0,
    nonce: str | None = None,
    burst_every_s: float = 1800.0,
    create_topics: bool = True,
) -> SimulationReport:
    """Every tick, send the events of (last tick, now] from ``clock`` until the duration or the stop event.

    ``duration_s`` is measured on ``clock`` (simulated time when the clock is a FixedClock that a test
    advances). ``bursts=True`` adds :func:`demo_bursts` at the start and a new round every ``burst_every_s``;
    a sequence adds exactly those bursts; False adds none. ``rate`` defaults to ``settings.simulate_rate``.
    """
    clock = clock or SystemClock()
    start = clock.now()
    simulator = CitySimulator(
        registry,
        seed=seed,
        rate=settings.simulate_rate if rate is None else rate,
        pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
        # A fresh nonce per run keeps event ids unique across restarts of the same seed.
        nonce=nonce or f"r{_to_ms(start) // 1000:x}",
    )
    report = SimulationReport(started=start)
    next_round, rounds = None, 0
    if bursts is True:
        for burst in demo_bursts(registry, start):
            simulator.add_burst(burst)
        next_round, rounds = start + timedelta(seconds=burst_every_s), 1
    elif bursts:
        for burst in bursts:
            simulator.add_burst(burst)
    report.bursts = len(simulator.bursts)
    end = None if duration_s is None else start + timedelta(seconds=duration_s)
    if create_topics:
        await ensure_topics(settings)
    log.info(
        "simulating %d grids at rate %.2f (~%.1f events/s), %d bursts, nonce %s",
        len(registry), simulator.rate, sum(simulator.mean_rate(s) for s in SOURCES), report.bursts, simulator.nonce,
    )  # fmt: skip
    last = start
    async with EventProducer(settings, registry) as producer:
        while True:
            stopping = await _pause(stop_event, tick_s)
            now = clock.now()
            upto = now if end is None else min(now, end)
            if upto > last:
                events = simulator.events_between(last, upto)
                if events:
                    report.sent += await producer.send_many(events)
                    report.by_source.update(e["source"] for e in events)
                simulator.forget_before(upto)
                last = upto
            report.ticks += 1
            if next_round is not None and now >= next_round:
                for burst in demo_bursts(registry, now, round_=rounds):
                    simulator.add_burst(burst)
                report.bursts = len(simulator.bursts)
                rounds += 1
                next_round = now + timedelta(seconds=burst_every_s)
            if stopping or (end is not None and now >= end):
                break
    report.ended = last
    log.info("simulation sent %d events %s", report.sent, dict(report.by_source))
    return report


async def simulate_forever(settings: Settings, *, duration_s: float | None = None, bursts: bool = True) -> None:
    """The ``pingan simulate`` command: the demo city on the wall clock, at ``settings.simulate_rate``.

    SIGTERM and SIGINT end the run after the current tick, so the last events are flushed, not dropped.
    """
    registry = GridRegistry.load(settings.grid_registry_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not a Unix loop
            pass
    try:
        await run_simulation(settings, registry, duration_s=duration_s, bursts=bursts, stop_event=stop)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
