"""The payload of the real open-data feeds (deploy/config/real/feeds.toml) and their envelope documents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# A category no feed table lists: weighs nothing (default_weight = 0), only moves the watermark.
HEARTBEAT = "heartbeat"


class OpenDataPayload(BaseModel):
    """One published police record: its row in the dataset and the category the police gave it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    record_id: str = Field(min_length=1, max_length=64)
    category: str = Field(min_length=1, max_length=64)


def envelope(
    source: str,
    record_id: str,
    category: str,
    event_type: str,
    severity: int,
    epoch_s: float,
    lon: float,
    lat: float,
) -> dict[str, Any]:
    """The envelope a producer of the feed would send (located by lon/lat: the worker finds the grid)."""
    return {
        "event_id": f"{source}-{record_id}",
        "source": source,
        "type": event_type,
        "severity": severity,
        "event_time": datetime.fromtimestamp(epoch_s, UTC).isoformat(),
        "location": {"lon": lon, "lat": lat},
        "payload": {"record_id": record_id, "category": category},
    }
