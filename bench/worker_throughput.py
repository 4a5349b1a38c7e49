"""Worker throughput on this machine, with the ceilings it is measured against, for both record formats.

    make bench    # = .venv/bin/python -m bench.worker_throughput --write docs/benchmarks.md (about 10 minutes)

Starts its own broker and ClickHouse on free loopback ports in a temporary directory, makes a realistic
mixed stream (four feeds, 300 grids, 2 % invalid, 1 % repeated) and writes it twice, to two topic sets: as
event batch records (schemas/batch.py, what the project's producers write) and one event per record (the
contract a third-party producer uses). For each it measures:

1. ceiling: a raw aiokafka consumer reading the topic and parsing each value with orjson (no validation);
2. pure pipeline: pingan.streams.pipeline.process_batch in-process (validation, grid check, windows, scoring);
3. worker: `pingan worker` as a separate process, from 10 % of the events stored to every event stored in
   ClickHouse (all writes, topics and checkpoint included), sampled every 0.1 s;

and once, ClickHouse's insert path as the worker uses it (DriverExecutor.insert of event rows).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.workload import as_batch_records, distinct_valid, is_unreadable, make_stream, pure_pipeline
from pingan import services
from pingan.grids import GridRegistry
from pingan.schemas.batch import is_batch
from pingan.schemas.envelope import parse_event
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.topics import ensure_topics
from tests.support.processes import ChildProcess, free_port

MARKER = "<!-- make bench writes here -->"


async def produce(settings: Settings, records: list[tuple[bytes | int | None, bytes]]) -> float:
    """Write records (key or partition, value); returns records/s."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20, max_batch_size=1024 * 1024,
        max_request_size=2 * 1024 * 1024,
    )  # fmt: skip
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for where, value in records:
            if isinstance(where, int):
                pending.append(await producer.send(settings.topic_events, value, partition=where))
            else:
                pending.append(await producer.send(settings.topic_events, value, key=where))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(records) / (time.perf_counter() - started)


async def raw_ceiling(settings: Settings, expected: int) -> float:
    """Events/s read and parsed by a bare consumer (a batch record's envelopes counted as events)."""
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
                        document = orjson.loads(message.value)
                    seen += len(document["events"]) if is_batch(message.value) else 1
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - (started or time.perf_counter()))


def insert_rate(settings: Settings, messages: list[tuple[bytes, bytes]], rows: int = 100_000) -> float:
    """Event rows/s through DriverExecutor.insert (the worker's own sink), in inserts of 20,000 rows."""
    now = datetime.now(UTC)
    valid = [parse_event(v, now=now) for _, v in messages[: rows * 2] if not is_unreadable(v)][:rows]
    table = [events.row(e, partition=0, offset=i, late=False, ingested_at=now) for i, e in enumerate(valid)]
    executor = connect(settings)
    try:
        executor.query("CREATE TABLE IF NOT EXISTS bench_events AS events")
        started = time.perf_counter()
        for i in range(0, len(table), 20_000):
            executor.insert("bench_events", events.COLUMNS, table[i : i + 20_000])
        rate = len(table) / (time.perf_counter() - started)
        executor.query("DROP TABLE bench_events")
    finally:
        executor.close()
    return rate


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
            if first is None and distinct_valid * 0.1 <= stored < distinct_valid:
                first = (now, stored)
            # Rows before distinct ids: uniqExact over every row at 10 Hz would take CPU from the worker.
            if stored >= distinct_valid and events.count_distinct(executor) >= distinct_valid:
                break
            if not worker.alive or now - started > 600:
                raise RuntimeError(f"worker stopped or too slow:\n{worker.log_tail()}")
            time.sleep(0.1)
        # A small stream may be stored between two samples: then the rate is over the worker's whole run.
        since, stored_then = first or (started, 0)
        rate, total = (distinct_valid - stored_then) / (now - since), now - started
    finally:
        worker.stop()
        executor.close()
    stages = [line for line in log_path.read_text().splitlines() if "processed" in line and "batches" in line]
    return rate, total, stages[-1].split("] ", 2)[-1].strip() if stages else "no progress line"


def measure(settings: Settings, registry: GridRegistry, messages: list[tuple[bytes, bytes]], batch: bool,
            distinct_valid: int, log_path: Path) -> dict[str, object]:  # fmt: skip
    """One record format on its own topics and database: producer, ceiling, pure pipeline, worker."""
    records: list[tuple[bytes | int | None, bytes]]
    records = list(as_batch_records(settings, messages)) if batch else list(messages)
    asyncio.run(ensure_topics(settings))
    produce_rate = asyncio.run(produce(settings, records)) * len(messages) / len(records)
    ceiling = asyncio.run(raw_ceiling(settings, len(messages)))
    pure = pure_pipeline(settings, registry, records, len(messages))
    prepare_database(settings)
    worker_rate, total_s, stages = worker_throughput(settings, distinct_valid, log_path)
    return {"records": len(records), "produce": produce_rate, "ceiling": ceiling, "pure": pure,
            "worker": worker_rate, "total": total_s, "stages": stages}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--write", type=Path, default=None, help="append the results to this markdown file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pingan-bench-") as tmp:
        base = Settings(
            data_dir=Path(tmp),
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            clickhouse_port=free_port(),
            clickhouse_http_port=free_port(),
            worker_id="bench-worker",
            progress_log_seconds=5.0,
            heartbeat_seconds=0,
        )
        services.up(base)
        try:
            registry = GridRegistry.load(base.grid_registry_path)
            messages = make_stream(registry, args.events)
            distinct = distinct_valid(messages)
            results = {}
            for name, batch in (("batch records", True), ("one event per record", False)):
                tag = "b" if batch else "s"
                settings = base.model_copy(update={
                    "topic_prefix": f"bench{tag}.", "clickhouse_database": f"bench_{tag}", "worker_id": f"bench-{tag}",
                })  # fmt: skip
                results[name] = measure(settings, registry, messages, batch, distinct, Path(tmp) / f"{tag}.log")
            sink = insert_rate(settings, messages)
        finally:
            services.down(base)

    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    batch_size = base.producer_batch_events
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {len(messages):,} events, {distinct:,} distinct valid",
        "",
        f"Machine: {cpu} cores, Python {platform.python_version()}, Tansu broker + ClickHouse 18.16 on the same host.",
        f"Batch records: up to {batch_size} events each, one partition's grids ({base.topic_partitions} partitions).",
        "",
        "| events/s | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
    ]
    rows = [
        ("producer (aiokafka, acks=all, one process)", "produce"),
        ("ceiling: raw aiokafka consume + orjson parse", "ceiling"),
        ("pure pipeline (validate, grid, windows, score), in-process", "pure"),
        ("**worker end to end** (Faust + ClickHouse + topics + checkpoint)", "worker"),
    ]
    for label, key in rows:
        cells = []
        for result in results.values():
            value, ceiling = float(result[key]), float(result["ceiling"])  # type: ignore[arg-type]
            ratio = f" ({value / ceiling:.1%} of the ceiling)" if key in ("pure", "worker") else ""
            cells.append(f"{value:,.0f}{ratio}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"ClickHouse insert path (DriverExecutor.insert, event rows, 20,000 per insert): {sink:,.0f} rows/s.",
              ""]  # fmt: skip
    for name, result in results.items():
        lines.append(f"- {name}: {result['records']:,} records; worker start to last event stored "
                     f"{result['total']:.1f} s; its own account: `{result['stages']}`.")  # fmt: skip
    lines.append("")
    report = "\n".join(lines)
    print(report)
    if args.write:  # newest first, under the marker (appended when the file has none)
        text = args.write.read_text(encoding="utf-8") if args.write.exists() else ""
        if MARKER in text:
            text = text.replace(MARKER, f"{MARKER}\n\n{report}", 1)
        else:
            text += report + "\n"
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
