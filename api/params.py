"""Validation of query parameters that FastAPI's types cannot express alone (pure, unit-tested)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pingan.api.errors import invalid
from pingan.api.views import LEVELS
from pingan.schemas.envelope import EARLIEST_TIME

MAX_HISTORY = timedelta(days=31)
DEFAULT_HISTORY = timedelta(hours=24)
MAX_STEP_SECONDS = 86_400
# Times a query may name. ClickHouse's DateTime counts UInt32 seconds from 1970 (it ends in 2106 and wraps
# after), so a time outside this range would fail in ClickHouse (a 5xx) or silently mean another time.
EARLIEST = EARLIEST_TIME  # what the worker stores (pingan.schemas.envelope): nothing before it can be asked for
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def within_storable(value: datetime, field: str) -> datetime:
    """``value`` if the store can hold it; an ``invalid_parameter`` problem naming ``field`` otherwise."""
    if not EARLIEST <= value < LATEST:
        raise invalid(f"{field}: must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC)", field)
    return value


def storable_day(value: date | None, field: str) -> date | None:
    if value is not None:
        within_storable(datetime(value.year, value.month, value.day, tzinfo=UTC), field)
    return value


def parse_levels(raw: str | None) -> frozenset[str] | None:
    """``red,orange`` -> {"red", "orange"}; None or blank means every level."""
    if raw is None or not raw.strip():
        return None
    levels = frozenset(part.strip().lower() for part in raw.split(",") if part.strip())
    unknown = sorted(levels.difference(LEVELS))
    if unknown:
        raise invalid(f"level: unknown level(s) {', '.join(unknown)}; use {', '.join(LEVELS)}", "level")
    return levels


@dataclass(frozen=True)
class HistoryRange:
    start: datetime
    end: datetime
    step: int


def history_range(
    start: datetime | None, end: datetime | None, step: int, *, now: datetime, bucket_seconds: int
) -> HistoryRange:
    """Check and complete a history request: [start, end) with steps of whole windows.

    Defaults: ``end`` = now, ``start`` = 24 h before ``end`` rounded down to a step boundary, so a default
    chart's first point covers a whole step.
    """
    if step <= 0 or step % bucket_seconds or step > MAX_STEP_SECONDS:
        raise invalid(
            f"step: must be a multiple of {bucket_seconds} seconds (the window size) and at most {MAX_STEP_SECONDS}",
            "step",
        )
    for value, name in ((start, "start"), (end, "end")):
        if value is not None:
            within_storable(value, name)
    if end is None:
        end = now.replace(microsecond=0)  # DateTime has second precision
    if start is None:
        start = end - DEFAULT_HISTORY
        start -= timedelta(seconds=int(start.timestamp()) % step, microseconds=start.microsecond)
    if end <= start:
        raise invalid("end: must be after start", "end")
    if end - start > MAX_HISTORY:
        raise invalid(f"start: the range may span at most {MAX_HISTORY.days} days", "start")
    return HistoryRange(start, end, step)
