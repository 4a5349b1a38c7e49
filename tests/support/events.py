"""Envelope builders for tests: valid events of each feed, and a deterministic mixed stream."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import orjson


def call110(event_id: str, grid_id: str, at: datetime, category: str = "criminal", severity: int = 3) -> dict:
    return {
        "event_id": event_id,
        "source": "call110",
        "type": category,
        "severity": severity,
        "event_time": at.isoformat(),
        "grid_id": grid_id,
        "payload": {"incident_id": event_id, "category": category, "priority": 2, "reported_at": at.isoformat()},
    }


def camera(event_id: str, grid_id: str, at: datetime, analytic: str = "crowd_density", severity: int = 2) -> dict:
    return {
        "event_id": event_id,
        "source": "camera",
        "type": analytic,
        "severity": severity,
        "event_time": at.isoformat(),
        "grid_id": grid_id,
        "device_id": f"cam-{grid_id}",
        "payload": {"camera_id": f"cam-{grid_id}", "analytic": analytic, "confidence": 0.9, "count": 12},
    }


def checkpoint(event_id: str, grid_id: str, at: datetime, flagged: bool = False) -> dict:
    return {
        "event_id": event_id,
        "source": "checkpoint",
        "type": "flagged_pass" if flagged else "pass",
        "severity": 3 if flagged else 1,
        "event_time": at.isoformat(),
        "grid_id": grid_id,
        "payload": {"checkpoint_id": f"kk-{grid_id}", "direction": "in", "flagged": flagged},
    }


def app_report(event_id: str, grid_id: str, at: datetime, category: str = "dispute") -> dict:
    return {
        "event_id": event_id,
        "source": "app_report",
        "type": category,
        "severity": 2,
        "event_time": at.isoformat(),
        "grid_id": grid_id,
        "payload": {"report_id": event_id, "reporter_role": "grid_worker", "category": category, "photo_count": 1},
    }


def mixed_stream(
    grid_ids: list[str], start: datetime, span: timedelta, count: int, *, seed: int = 7
) -> tuple[list[tuple[bytes | None, bytes]], int]:
    """(key, value) messages in roughly time order with jitter, ~2% invalid, ~1% repeated (producer retries).

    Returns the messages and the number of distinct valid event ids among them.
    """
    rng = random.Random(seed)
    builders = [call110, call110, camera, camera, camera, checkpoint, app_report]
    messages: list[tuple[bytes | None, bytes]] = []
    valid_ids: set[str] = set()
    for i in range(count):
        grid_id = rng.choice(grid_ids)
        jitter = timedelta(seconds=rng.uniform(-90, 30))  # out of order, mostly within the lateness allowance
        at = start + span * (i / count) + jitter
        roll = rng.random()
        if roll < 0.02:
            messages.append((grid_id.encode(), b'{"event_id": "broken", "source": '))
            continue
        if roll < 0.03 and messages:
            messages.append(messages[-1])
            continue
        document: dict[str, Any] = rng.choice(builders)(f"mix-{seed}-{i}", grid_id, at)
        if document["source"] == "call110":
            document["type"] = document["payload"]["category"] = rng.choice(["criminal", "dispute", "help", "fire"])
            document["severity"] = rng.randint(1, 5)
        valid_ids.add(document["event_id"])
        messages.append((grid_id.encode(), orjson.dumps(document)))
    return messages, len(valid_ids)
