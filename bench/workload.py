"""What `make bench` runs: its streams (a mix of the four feeds at a chosen density, in both record formats)
and the pure pipeline over them in-process."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pingan.baselines import grid_profiles
from pingan.feeds import load_feeds
from pingan.grids import GridRegistry
from pingan.index.baseline import BaselineModel
from pingan.index.loading import load_index
from pingan.partitioning import partition_for_key
from pingan.schemas.batch import batched, encode_batch, is_batch
from pingan.settings import Settings
from pingan.streams.pipeline import PipelineConfig, Record, process_batch
from pingan.streams.windows import PartitionState, window_spec

SOURCES = ("call110", "camera", "camera", "camera", "checkpoint", "app_report")
EVENT_TYPES = {"call110": "dispute", "camera": "crowd_density", "checkpoint": "pass", "app_report": "hazard"}
BUSY_GRIDS = 300  # the grids the default stream touches (the demo district has 980)


def envelope(i: int, source: str, grid_id: str, at: str, prefix: str = "b") -> dict[str, Any]:
    """One valid event of a feed, for a grid, at an RFC 3339 time; ``prefix``-``i`` is its event id."""
    payload = {
        "call110": {"incident_id": f"i{i}", "category": "dispute", "priority": 2, "reported_at": at},
        "camera": {"camera_id": "c1", "analytic": "crowd_density", "confidence": 0.8, "count": 9},
        "checkpoint": {"checkpoint_id": "k1", "direction": "in", "flagged": False},
        "app_report": {"report_id": f"r{i}", "reporter_role": "citizen", "category": "hazard"},
    }[source]
    return {
        "event_id": f"{prefix}-{i}", "source": source, "type": EVENT_TYPES[source], "severity": 2, "event_time": at,
        "grid_id": grid_id, "payload": payload,
    }  # fmt: skip


def make_stream(
    registry: GridRegistry, count: int, seed: int = 1, *, grids: int = BUSY_GRIDS, span_s: float = 7200.0,
    every_grid: bool = False,
) -> list[tuple[bytes, bytes]]:  # fmt: skip
    """``count`` (grid key, value) messages over the first ``grids`` grids, event times evenly spread over the
    ``span_s`` seconds before now; 2 % unreadable, 1 % sent twice. Grids are drawn at random, or in turn
    with ``every_grid`` (so each gets its share)."""
    rng = random.Random(seed)
    grid_ids = [g.grid_id for g in registry.grids[:grids]]
    start = datetime.now(UTC) - timedelta(seconds=span_s)
    messages: list[tuple[bytes, bytes]] = []
    for i in range(count):
        grid_id = grid_ids[i % len(grid_ids)] if every_grid else rng.choice(grid_ids)
        at = (start + timedelta(seconds=span_s * i / count)).isoformat()
        document = envelope(i, rng.choice(SOURCES), grid_id, at)
        value = b'{"broken' if rng.random() < 0.02 else orjson.dumps(document)
        messages.append((grid_id.encode(), value))
        if rng.random() < 0.01:
            messages.append(messages[-1])
    return messages


def is_unreadable(value: bytes) -> bool:
    return value.startswith(b'{"broken')


def distinct_valid(messages: Sequence[tuple[bytes, bytes]]) -> int:
    """Events the worker stores: readable, each event id once."""
    return len({orjson.loads(v)["event_id"] for _, v in messages if not is_unreadable(v)})


def as_batch_records(settings: Settings, messages: Sequence[tuple[bytes, bytes]]) -> list[tuple[int | None, bytes]]:
    """The stream as the project's producers write it: event batch records of up to
    ``settings.producer_batch_events`` envelopes per partition (an unreadable one goes in as a JSON string)."""
    values = [orjson.dumps(v.decode()) if is_unreadable(v) else v for _, v in messages]
    partitions = settings.topic_partitions
    placed = [(partition_for_key(key, partitions), len(v)) for (key, _), v in zip(messages, values, strict=True)]
    return [
        (partition, encode_batch([values[i] for i in indices]))
        for partition, indices in batched(placed, max_events=settings.producer_batch_events)
    ]


def in_process(records: Sequence[tuple[bytes | int | None, bytes]]) -> list[Record]:
    """Records as the worker hands them to the pipeline (one partition: the pipeline keeps a state per partition)."""
    return [Record("bench", 0, i, k if isinstance(k, bytes) else None, value) for i, (k, value) in enumerate(records)]


def pipeline_config(settings: Settings, registry: GridRegistry) -> PipelineConfig:
    index = load_index(settings, load_feeds(settings)).config  # what the worker scores with
    # The worker scores against a baseline (the priors until one is learned): so does this measurement.
    baseline = BaselineModel(index.baseline, grid_profiles(registry))
    return PipelineConfig(index=index, partitions=1, baseline=baseline)


def new_state(settings: Settings, config: PipelineConfig) -> PartitionState:
    """A partition's state with the worker's windows (buckets kept for the index's hysteresis)."""
    return PartitionState(window_spec(settings, config.index))


def run_pipeline(settings: Settings, registry: GridRegistry, config: PipelineConfig, records: Sequence[Record],
                 state: PartitionState, events: int) -> float:  # fmt: skip
    """Process the records in the worker's batch sizes (results dropped, as once written); seconds taken."""
    per_batch = settings.batch_max_events
    if records and is_batch(records[0].value):  # the worker takes as many records; each carries many events
        per_batch = max(1, per_batch * len(records) // events)
    started = time.perf_counter()
    for i in range(0, len(records), per_batch):
        process_batch(records[i : i + per_batch], state, registry, config, now=datetime.now(UTC))
    return time.perf_counter() - started


def pure_pipeline(settings: Settings, registry: GridRegistry, records: Sequence[tuple[bytes | int | None, bytes]],
                  events: int) -> float:  # fmt: skip
    """Events/s of pingan.streams.pipeline.process_batch on a fresh partition state."""
    config = pipeline_config(settings, registry)
    seconds = run_pipeline(settings, registry, config, in_process(records), new_state(settings, config), events)
    return events / seconds
