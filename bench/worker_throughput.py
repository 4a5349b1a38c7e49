"""Worker throughput on this machine, with the two ceilings it is measured against.

    .venv/bin/python -m bench.worker_throughput [--events 200000] [--write docs/benchmarks.md]

Starts its own broker and ClickHouse on free loopback ports in a temporary directory, produces a realistic
mixed stream (four feeds, 300 grids, 2 % invalid, 1 % repeated) and measures:

1. ceiling: a raw aiokafka consumer reading the topic and parsing each value with orjson (no validation);
2. pure pipeline: streams.pipeline.process_batch in-process (validation, grid check, windows, scoring);
3. worker: `pingan worker` as a separate process, from its first stored event to every event stored in
   ClickHouse (all writes, topics and checkpoint included), sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pingan import services
from pingan.baselines import grid_profiles
from pingan.grids import GridRegistry
from pingan.index.baseline import BaselineModel
from pingan.index.scoring import load_config
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from streams.pipeline import PipelineConfig, Record, process_batch
from streams.windows import PartitionState, WindowSpec
from tests.support.processes import ChildProcess, free_port

SOURCES = ("call110", "camera", "camera", "camera", "checkpoint", "app_report")


def make_stream(registry: GridRegistry, count: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    grid_ids = [g.grid_id for g in registry.grids[:300]]
    start = datetime.now(UTC) - timedelta(hours=2)
    messages: list[tuple[bytes, bytes]] = []
    for i in range(count):
        grid_id = rng.choice(grid_ids)
        at = (start + timedelta(seconds=7200 * i / count)).isoformat()
        source = rng.choice(SOURCES)
        payload = {
            "call110": {"incident_id": f"i{i}", "category": "dispute", "priority": 2, "reported_at": at},
            "camera": {"camera_id": "c1", "analytic": "crowd_density", "confidence": 0.8, "count": 9},
            "checkpoint": {"checkpoint_id": "k1", "direction": "in", "flagged": False},
            "app_report": {"report_id": f"r{i}", "reporter_role": "citizen", "category": "hazard"},
        }[source]
        event_type = {"call110": "dispute", "camera": "crowd_density", "checkpoint": "pass", "app_report": "hazard"}
        document = {
            "event_id": f"b-{i}", "source": source, "type": event_type[source], "severity": 2, "event_time": at,
            "grid_id": grid_id, "payload": payload,
        }  # fmt: skip
        value = b'{"broken' if rng.random() < 0.02 else orjson.dumps(document)
        messages.append((grid_id.encode(), value))
        if rng.random() < 0.01:
            messages.append(messages[-1])
    return messages


async def produce(settings: Settings, messages: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = [await producer.send(settings.topic_events, value, key=key) for key, value in messages]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(messages) / (time.perf_counter() - started)


async def raw_ceiling(settings: Settings, expected: int) -> float:
    consumer = AIOKafkaConsumer(
        settings.topic_events,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id="bench-ceiling",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=10_000,
    )
    await consumer.start()
    seen = 0
    started = None
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batches:
                started = time.perf_counter()
            for batch in batches.values():
                for message in batch:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        orjson.loads(message.value)
                seen += len(batch)
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - (started or time.perf_counter()))


def pure_pipeline(settings: Settings, registry: GridRegistry, messages: list[tuple[bytes, bytes]]) -> float:
    index = load_config(settings.risk_config_path)
    # The worker scores against a baseline (the priors until one is learned): so does this measurement.
    baseline = BaselineModel(index.baseline, grid_profiles(registry))
    config = PipelineConfig(index=index, partitions=1, baseline=baseline)
    state = PartitionState(WindowSpec(settings.window_seconds, settings.hop_window_seconds))
    records = [Record("bench", 0, i, key, value, None) for i, (key, value) in enumerate(messages)]
    started = time.perf_counter()
    for i in range(0, len(records), settings.batch_max_events):
        process_batch(records[i : i + settings.batch_max_events], state, registry, config, now=datetime.now(UTC))
    return len(records) / (time.perf_counter() - started)


def worker_throughput(settings: Settings, distinct_valid: int, log_path: Path) -> tuple[float, float, str]:
    """(events/s between 10 % and 100 % stored, seconds from start to all stored, the worker's stage log)."""
    executor = connect(settings)
    worker = ChildProcess("worker", settings, log_path).start()
    started = time.perf_counter()
    first = None
    try:
        while True:
            stored = events.count_rows(executor)
            now = time.perf_counter()
            if first is None and stored >= distinct_valid * 0.1:
                first = (now, stored)
            if events.count_distinct(executor) >= distinct_valid:
                break
            if not worker.alive or now - started > 600:
                raise RuntimeError(f"worker stopped or too slow:\n{worker.log_tail()}")
            time.sleep(0.1)
        assert first is not None
        rate, total = (distinct_valid - first[1]) / (now - first[0]), now - started
    finally:
        worker.stop()
        executor.close()
    stages = [line for line in log_path.read_text().splitlines() if "processed" in line and "batches" in line]
    return rate, total, stages[-1].split("] ", 2)[-1].strip() if stages else "no progress line"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--write", type=Path, default=None, help="append the results to this markdown file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pingan-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            clickhouse_port=free_port(),
            clickhouse_http_port=free_port(),
            worker_id="bench-worker",
            progress_log_seconds=5.0,
        )
        services.up(settings)
        try:
            registry = GridRegistry.load(settings.grid_registry_path)
            messages = make_stream(registry, args.events)
            distinct_valid = len({orjson.loads(v)["event_id"] for _, v in messages if not v.startswith(b'{"broken')})
            asyncio.run(ensure_topics(settings))
            produce_rate = asyncio.run(produce(settings, messages))
            ceiling = asyncio.run(raw_ceiling(settings, len(messages)))
            pure = pure_pipeline(settings, registry, messages)
            prepare_database(settings)
            worker_rate, total_s, stages = worker_throughput(settings, distinct_valid, Path(tmp) / "worker.log")
        finally:
            services.down(settings)

    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {len(messages):,} messages, {distinct_valid:,} distinct valid",
        "",
        f"Machine: {cpu} cores, Python {platform.python_version()}, Tansu broker + ClickHouse 18.16 on the same host.",
        "",
        "| stage | events/s |",
        "|---|---|",
        f"| producer (aiokafka, acks=all, one process) | {produce_rate:,.0f} |",
        f"| ceiling: raw aiokafka consume + orjson parse | {ceiling:,.0f} |",
        f"| pure pipeline (validate, grid, windows, score), in-process | {pure:,.0f} |",
        f"| **worker end to end** (Faust + ClickHouse + topics + checkpoint) | **{worker_rate:,.0f}** |",
        "",
        f"Worker start to last event stored: {total_s:.1f} s (includes Faust start-up and recovery).",
        f"Worker's own account at shutdown: `{stages}`.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        with args.write.open("a", encoding="utf-8") as out:
            out.write(report + "\n")


if __name__ == "__main__":
    sys.exit(main())
