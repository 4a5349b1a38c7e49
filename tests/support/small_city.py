"""A five-grid district and two days of 110 calls whose published index is worked out by hand.

District D (40,000 residents), one subdistrict, four communities, two police stations:

    grid  residents  community  police station
    G1    10,000     C1         P1
    G2    10,000     C2         P1
    G3     5,000     C3         P1
    G4     5,000     C3         P2
    G5    10,000     C4         P2

Weights (:data:`CONFIG`): criminal 2, anything else 1, severity 5 doubles; camera events do not count.
Day 1 is Sunday 2026-11-22 and day 2 Monday 2026-11-23, Beijing time. The numbers they must give are in
tests/integration/test_published_index.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from pingan.grids import Grid, GridRegistry, Unit, ring_area_centroid
from pingan.index.published import parse_config
from pingan.schemas.envelope import Event
from pingan.store import events
from pingan.store.client import Executor

DAY1 = date(2026, 11, 22)
DAY2 = date(2026, 11, 23)
# Local (UTC+8) 10:00 of each day.
DAY1_MORNING = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
DAY2_MORNING = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
# 00:30 on day 2 in Beijing is still day 1 in UTC: it must count for day 2.
DAY2_JUST_AFTER_MIDNIGHT = datetime(2026, 11, 22, 16, 30, tzinfo=UTC)
INGESTED = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)

CONFIG_DOCUMENT: dict[str, Any] = {
    "version": "small-city-1",
    "timezone": "Asia/Shanghai",
    "min_population": 1000,
    "severity_multiplier": {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0, "5": 2.0},
    "sources": {"call110": {"default_weight": 1.0, "type_weights": {"criminal": 2.0}}},
    "baseline_periods": {"day": 2, "week": 2, "month": 2},
    "score": {"breakpoints": [[0.0, 100.0], [1.0, 90.0], [2.0, 80.0], [3.0, 70.0], [10.0, 0.0]]},
    "bands": {"green": 90.0, "yellow": 80.0, "orange": 70.0},
    "flag": {
        "community": {"worst_n": 1, "below_score": 70.0, "min_incidents": 2},
        "police_station": {"worst_n": 1, "below_score": 70.0, "min_incidents": 2},
    },
}
CONFIG = parse_config(CONFIG_DOCUMENT)


def _grid(index: int, population: int, community: str, station: str) -> Grid:
    lon, lat = 103.6 + index * 0.01, 31.0
    ring = ((lon, lat), (lon + 0.01, lat), (lon + 0.01, lat + 0.01), (lon, lat + 0.01))
    area, centroid = ring_area_centroid(ring)
    return Grid(f"G{index}", f"网格{index}", "urban", population, population // 3, "D", "S", community, station,
                ring, centroid, (lon, lat, lon + 0.01, lat + 0.01), area)  # fmt: skip


REGISTRY = GridRegistry(
    [
        _grid(1, 10_000, "C1", "P1"),
        _grid(2, 10_000, "C2", "P1"),
        _grid(3, 5_000, "C3", "P1"),
        _grid(4, 5_000, "C3", "P2"),
        _grid(5, 10_000, "C4", "P2"),
    ],
    [
        Unit("D", "平安区", "district", None),
        Unit("S", "安宁街道", "subdistrict", "D"),
        Unit("C1", "一社区", "community", "S"),
        Unit("C2", "二社区", "community", "S"),
        Unit("C3", "三社区", "community", "S"),
        Unit("C4", "四社区", "community", "S"),
        Unit("P1", "一派出所", "police_station", "D"),
        Unit("P2", "二派出所", "police_station", "D"),
    ],
)


def event(event_id: str, grid_id: str, at: datetime, event_type: str, severity: int = 3,
          source: str = "call110") -> Event:  # fmt: skip
    return Event(
        event_id=event_id, source=source, type=event_type, severity=severity, event_time=at,
        receive_time=at + timedelta(seconds=3), grid_id=grid_id, lon=None, lat=None, device_id="",
        schema_version=1, payload_json="{}",
    )  # fmt: skip


def two_days() -> list[Event]:
    """Day 1: C1 4 criminal (8), C2 2 disputes (2), C4 2 disputes (2): 12 weighted, 3.0 per 10,000.
    Day 2: C1 1 dispute (1), C3 3 criminal in G3 + 1 criminal of severity 5 in G4 (10), C4 2 criminal (4);
    and camera alerts in C2, which do not count."""
    found = []
    for i in range(4):
        found.append(event(f"d1-c1-{i}", "G1", DAY1_MORNING + timedelta(minutes=i), "criminal"))
    for i in range(2):
        found.append(event(f"d1-c2-{i}", "G2", DAY1_MORNING + timedelta(minutes=i), "dispute"))
        found.append(event(f"d1-c4-{i}", "G5", DAY1_MORNING + timedelta(minutes=i), "dispute", severity=2))
    found.append(event("d2-c1-0", "G1", DAY2_MORNING, "dispute"))
    found.append(event("d2-c3-0", "G3", DAY2_JUST_AFTER_MIDNIGHT, "criminal"))
    for i in range(1, 3):
        found.append(event(f"d2-c3-{i}", "G3", DAY2_MORNING + timedelta(minutes=i), "criminal"))
    found.append(event("d2-c3-g4", "G4", DAY2_MORNING, "criminal", severity=5))
    for i in range(2):
        found.append(event(f"d2-c4-{i}", "G5", DAY2_MORNING + timedelta(minutes=i), "criminal"))
    for i in range(5):
        found.append(event(f"d2-cam-{i}", "G2", DAY2_MORNING, "fight", source="camera"))
    return found


def insert_two_days(executor: Executor) -> None:
    """The two days through pingan.store.events, with one event redelivered (stored twice, counted once)."""
    found = two_days()
    rows = [events.row(e, partition=0, offset=i, late=False, ingested_at=INGESTED) for i, e in enumerate(found)]
    rows.append(events.row(found[0], partition=0, offset=len(found), late=True, ingested_at=INGESTED))
    events.insert(executor, rows)
