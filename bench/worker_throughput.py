"""Worker throughput, latency, catch-up and memory on this machine, with the ceilings they are measured against.

    make bench    # = .venv/bin/python -m bench.worker_throughput --write docs/benchmarks.md (about 12 minutes)

Starts its own broker and ClickHouse on free loopback ports in a temporary directory, makes a realistic
mixed stream (four feeds, 300 grids, 2 % invalid, 1 % repeated; ``--events``, 100,000 by default) and a dense
one (the same mix at 20 events per grid per 10 s step, a province's density), and writes them in both record
formats, each to a topic set and database of its own: as event batch records (schemas/batch.py, what the
project's producers write) and one event per record (the contract a third-party producer uses). For each:

1. producer: the records written with aiokafka, acks=all, from one process;
2. ceiling: a raw aiokafka consumer reading the topic and parsing each value with orjson (no validation);
3. Faust counting agent: a Faust agent on the same topic that only counts ``take_events(5000)`` batches and
   parses each value (bench/faust_agents.py ``count``), its own process;
4. textbook Faust agent: one update of a hopping windowed Table per event (bench/faust_agents.py
   ``textbook``), its own process; its per-(grid, window) counts must equal those of the stream written;
5. pure pipeline: pingan.streams.pipeline.process_batch in-process (validation, grid check, windows, scoring),
   on the stream and on the dense stream;
6. worker: `pingan worker` as a separate process, from its first records (the time of its log line saying so,
   after Faust's start and the group join) to every event stored in ClickHouse (all writes, topics and
   checkpoint included), sampled every 0.1 s; its start-up is reported beside.

Then, with batch records only:

7. catch-up: one hour of the simulated city (producers/simulator.py, as `make demo` runs it) at 20 times its
   rate, its busiest hour (18:00-19:00 China time), written first; a fresh worker's time from its start to
   every event stored;
8. latency: production to the effect on ``GET /v1/grids/risk``, p50 and p99, with a worker and an API running,
   at 10,000 events/s offered and at half the worker's rate measured in 6 (bench/worker_latency.py);
9. memory and grid lookup at 1,000, 10,000 and 50,000 grids of a province-like registry, the pure pipeline in
   a process of its own per size (bench/registry_scale.py);

and once, ClickHouse's insert path as the worker uses it (DriverExecutor.insert of event rows). Every rate is
also given as a share of the same run's ceiling for its record format.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.faust_agents import check_windows, run_agent
from bench.registry_scale import measure_scales
from bench.worker_latency import Latency, measure_latency
from bench.workload import BUSY_GRIDS, as_batch_records, distinct_valid, is_unreadable, make_stream, pure_pipeline
from pingan import services
from pingan.grids import GridRegistry
from pingan.producers.kafka import EventProducer
from pingan.producers.simulator import LOCAL_UTC_OFFSET_H, CitySimulator, demo_bursts
from pingan.schemas.batch import is_batch
from pingan.schemas.envelope import parse_event
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.streams.app import FIRST_RECORDS
from pingan.topics import ensure_topics
from tests.support.processes import ChildProcess, free_port

MARKER = "<!-- make bench writes here -->"
DENSE_PER_STEP = 20  # events per grid per score step in the dense stream (10^5 events/s over 50,000 grids)
CATCH_UP_RATE = 20.0  # times the simulated city's rate
CATCH_UP_LOCAL_HOUR = 18  # China time: the simulated city's busiest hour (the evening peak)
LATENCY_RATE = 10_000.0


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


def worker_throughput(settings: Settings, expected: int, log_path: Path) -> tuple[float, float, str]:
    """(events/s from the worker's first records to all stored, seconds from its start to all stored, the worker's
    stage log and start-up time). Start-up (Faust, the group join) is left out of the rate: a whole stream of batch
    records can be one round of the worker, so a rate between stored fractions would time the start-up too."""
    executor = connect(settings)
    worker = ChildProcess("worker", settings, log_path).start()
    started, wall_started = time.perf_counter(), time.time()
    try:
        while True:
            stored = events.count_rows(executor)
            now = time.perf_counter()
            # Rows before distinct ids: uniqExact over every row at 10 Hz would take CPU from the worker.
            if stored >= expected and events.count_distinct(executor) >= expected:
                break
            if not worker.alive or now - started > 600:
                raise RuntimeError(f"worker stopped or too slow:\n{worker.log_tail()}")
            time.sleep(0.1)
        wall_done = time.time()
        # The worker logs its stage seconds every progress_log_seconds: wait for a line written after the last store.
        time.sleep(settings.progress_log_seconds + 0.5)
    finally:
        worker.stop()
        executor.close()
    log_text = log_path.read_text()
    took = first_records_at(log_text)
    if took is None:
        raise RuntimeError(f"no '{FIRST_RECORDS}' line in the worker's log:\n{worker.log_tail()}")
    stages = [line for line in log_text.splitlines() if "processed" in line and "batches" in line]
    account = stages[-1].split("] ", 2)[-1].strip() if stages else "no progress line"
    return expected / (wall_done - took), now - started, f"{account}; start-up {took - wall_started:.1f}s"


def first_records_at(log_text: str) -> float | None:
    """The Unix time of the worker's first records, from the time its log line carries (local time, ms)."""
    for line in log_text.splitlines():
        if FIRST_RECORDS in line:
            found = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
            if found:
                return time.mktime(time.strptime(found[1], "%Y-%m-%d %H:%M:%S")) + int(found[2]) / 1000
    return None


def measure(settings: Settings, registry: GridRegistry, messages: list[tuple[bytes, bytes]],
            dense: list[tuple[bytes, bytes]], batch: bool, work_dir: Path) -> dict[str, Any]:  # fmt: skip
    """One record format on its own topics and database: producer, ceiling, Faust agents, pure pipeline, worker."""
    records: list[tuple[bytes | int | None, bytes]]
    records = list(as_batch_records(settings, messages)) if batch else list(messages)
    dense_records = as_batch_records(settings, dense) if batch else dense
    asyncio.run(ensure_topics(settings))
    produce_rate = asyncio.run(produce(settings, records)) * len(messages) / len(records)
    ceiling = asyncio.run(raw_ceiling(settings, len(messages)))
    count = run_agent(settings, "count", len(messages), work_dir)
    textbook = run_agent(settings, "textbook", len(messages), work_dir)
    pure = pure_pipeline(settings, registry, records, len(messages))
    pure_dense = pure_pipeline(settings, registry, dense_records, len(dense))
    prepare_database(settings)
    log_path = work_dir / f"{settings.worker_id}.log"
    worker_rate, total_s, stages = worker_throughput(settings, distinct_valid(messages), log_path)
    return {
        "records": len(records), "produce": produce_rate, "ceiling": ceiling,
        "faust_count": count["events"] / count["seconds"], "faust_textbook": textbook["events"] / textbook["seconds"],
        "textbook_check": check_windows(settings, messages, textbook), "pure": pure, "pure_dense": pure_dense,
        "worker": worker_rate, "total": total_s, "stages": stages,
    }  # fmt: skip


def busiest_hour(now: datetime) -> tuple[datetime, datetime]:
    """The latest full hour from CATCH_UP_LOCAL_HOUR to the next, China time, that has ended by ``now``."""
    end = now.replace(minute=0, second=0, microsecond=0)
    while (end.hour + LOCAL_UTC_OFFSET_H) % 24 != (CATCH_UP_LOCAL_HOUR + 1) % 24:
        end -= timedelta(hours=1)
    return end - timedelta(hours=1), end


async def send_backlog(settings: Settings, registry: GridRegistry, backlog: Sequence[dict[str, Any]]) -> None:
    async with EventProducer(settings, registry) as producer:  # the simulator's producer: event batch records
        await producer.send_many(backlog)


def catch_up(base: Settings, registry: GridRegistry, work_dir: Path) -> dict[str, Any]:
    """A fresh worker on an hour's backlog of the simulated city at CATCH_UP_RATE times its rate."""
    settings = base.model_copy(update={"topic_prefix": "benchc.", "clickhouse_database": "bench_c",
                                       "worker_id": "bench-c"})  # fmt: skip
    start, end = busiest_hour(datetime.now(UTC))
    key = settings.pseudonym_key.get_secret_value().encode()
    simulator = CitySimulator(registry, rate=CATCH_UP_RATE, pseudonym_key=key, nonce="catchup")
    for burst in demo_bursts(registry, start):  # `pingan simulate` starts with these incidents
        simulator.add_burst(burst)
    backlog = simulator.events_between(start, end)
    asyncio.run(ensure_topics(settings))
    asyncio.run(send_backlog(settings, registry, backlog))
    prepare_database(settings)
    _, total_s, stages = worker_throughput(settings, len(backlog), work_dir / "bench-c.log")
    return {"events": len(backlog), "start": start, "seconds": total_s, "rate": len(backlog) / total_s,
            "stages": stages}  # fmt: skip


def _share(value: float, ceiling: float) -> str:
    return f"{value:,.0f} ({value / ceiling:.1%} of the ceiling)"


def table_rows(results: dict[str, dict[str, Any]], backlog: dict[str, Any], latency: Sequence[Latency],
               rates: Sequence[float], scales: Sequence[dict[str, float]]) -> list[tuple[str, ...]]:  # fmt: skip
    """The one table: a label, then a cell per record format (``–`` where a row measures batch records only)."""
    rows: list[tuple[str, ...]] = []
    per_format = [
        ("producer (aiokafka, acks=all, one process)", "produce"),
        ("ceiling: raw aiokafka consume + orjson parse", "ceiling"),
        ("Faust counting agent: counts `take_events(5000)` batches, orjson parse", "faust_count"),
        ("textbook Faust agent: a hopping windowed Table updated per event", "faust_textbook"),
        ("pure pipeline (validate, grid, windows, score), in-process", "pure"),
        (f"pure pipeline, dense stream ({DENSE_PER_STEP} events per grid per 10 s step)", "pure_dense"),
        ("**worker end to end** (Faust + ClickHouse + topics + checkpoint)", "worker"),
    ]
    for label, key in per_format:
        cells = [f"{r[key]:,.0f}" if key in ("produce", "ceiling") else _share(r[key], r["ceiling"])
                 for r in results.values()]  # fmt: skip
        rows.append((label, *cells))
    ceiling = float(results["batch records"]["ceiling"])
    rows.append((
        f"catch-up: a fresh worker on 1 h of the simulated city at {CATCH_UP_RATE:.0f}× ({backlog['events']:,} "
        "events), start to every event stored",
        f"{backlog['seconds']:.0f} s: {_share(backlog['rate'], ceiling)}", "–",
    ))  # fmt: skip
    for rate in rates:
        why = "" if rate == LATENCY_RATE else ", half the worker's rate above"
        label = f"latency, production to `GET /v1/grids/risk`, {rate:,.0f} events/s offered ({BUSY_GRIDS} grids{why})"
        found = next((run for run in latency if run.rate == rate), None)
        shown = found.summary() if found else "not run: the worker had not caught up with the run before"
        rows.append((label, shown, "–"))
    sizes = " / ".join(f"{s['grids']:,.0f}" for s in scales)
    times = " / ".join(f"{s['locate_us']:.2f}" for s in scales)
    candidates = " / ".join(f"{s['candidates']:.1f}" for s in scales)
    rows.append((f"grid lookup (`GridRegistry.locate`), µs per point at {sizes} grids",
                 f"{times} µs ({candidates} candidate grids tested per point)", "–"))  # fmt: skip
    for s in scales:
        held = s["state_mb"] + s["baseline_cache_mb"]
        rows.append((
            f"worker memory at {s['grids']:,.0f} grids (pure pipeline, {s['events']:,.0f} events, "
            f"{s['events'] / s['grids']:.0f} per grid in {s['span_s'] / 60:.0f} min)",
            f"{held:,.1f} MB held ({held * 1024 / s['grids']:.1f} KB per grid: state {s['state_mb']:,.1f}, baseline "
            f"cache {s['baseline_cache_mb']:,.1f}), RSS +{s['rss_growth_mb']:,.0f} MB; registry "
            f"{s['registry_mb']:,.1f} MB; {s['pipeline_events_per_s']:,.0f} events/s", "–",
        ))  # fmt: skip
    return rows


def render(results: dict[str, dict[str, Any]], rows: Sequence[tuple[str, ...]], *, events_count: int, distinct: int,
           dense_count: int, sink: float, backlog: dict[str, Any], latency: Sequence[Latency],
           scales: Sequence[dict[str, float]], settings: Settings, minutes: float) -> str:  # fmt: skip
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {events_count:,} events, {distinct:,} distinct valid",
        "",
        f"Machine: {cpu} cores, Python {platform.python_version()}, Tansu broker + ClickHouse 18.16 on the same host.",
        f"Batch records: up to {settings.producer_batch_events} events each, one partition's grids "
        f"({settings.topic_partitions} partitions). `make bench` took {minutes:.1f} minutes.",
        "",
        "| events/s unless stated | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"ClickHouse insert path (DriverExecutor.insert, event rows, 20,000 per insert): {sink:,.0f} rows/s.",
        "",
    ]
    for name, result in results.items():
        lines.append(f"- {name}: {result['records']:,} records; worker start to last event stored "
                     f"{result['total']:.1f} s; its own account: `{result['stages']}`; textbook agent's counts "
                     f"against the stream's: {result['textbook_check']}.")  # fmt: skip
    lines.append(
        f"- dense stream: {dense_count:,} events over {BUSY_GRIDS} grids in "
        f"{dense_count * settings.score_step_seconds / (DENSE_PER_STEP * BUSY_GRIDS):.0f} s of event time."
    )
    lines.append(f"- catch-up: the hour from {backlog['start']:%Y-%m-%d %H:%M} UTC; the worker's own account: "
                 f"`{backlog['stages']}`.")  # fmt: skip
    for run in latency:
        lines.append(
            f"- latency at {run.rate:,.0f} events/s: {run.produced:,} events in {run.seconds:.1f} s, "
            f"{len(run.seen_at)} of {len(run.sent_at)} markers shown, those of the second half "
            f"{run.trend:+.2f} s later (median); lag at the end {run.lag:,} events."
        )
    peaks = " / ".join(f"{s['peak_rss_mb']:,.0f}" for s in scales)
    lines.append(
        f"- memory: objects held, walked (state: the PartitionState; baseline cache: what the baseline model "
        f"memoised while scoring); RSS growth over the pipeline run; the measuring process's peak RSS "
        f"(registry document and stream included) {peaks} MB."
    )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--write", type=Path, default=None, help="append the results to this markdown file")
    args = parser.parse_args()
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="pingan-bench-") as tmp:
        work_dir = Path(tmp)
        base = Settings(
            data_dir=work_dir,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            clickhouse_port=free_port(),
            clickhouse_http_port=free_port(),
            worker_id="bench-worker",
            progress_log_seconds=1.0,
            heartbeat_seconds=0,
        )
        services.up(base)
        try:
            registry = GridRegistry.load(base.grid_registry_path)
            messages = make_stream(registry, args.events)
            dense_span = args.events * base.score_step_seconds / (DENSE_PER_STEP * BUSY_GRIDS)
            dense = make_stream(registry, args.events, seed=2, span_s=dense_span)
            results = {}
            for name, batch in (("batch records", True), ("one event per record", False)):
                tag = "b" if batch else "s"
                settings = base.model_copy(update={
                    "topic_prefix": f"bench{tag}.", "clickhouse_database": f"bench_{tag}", "worker_id": f"bench-{tag}",
                })  # fmt: skip
                results[name] = measure(settings, registry, messages, dense, batch, work_dir)
            sink = insert_rate(settings, messages)
            backlog = catch_up(base, registry, work_dir)
            latency_rates = [LATENCY_RATE, float(results["batch records"]["worker"]) / 2]
            latency = measure_latency(base, registry, latency_rates, work_dir)
        finally:
            services.down(base)
    scales = measure_scales()  # no services: the broker's and ClickHouse's memory and CPU are given back first

    rows = table_rows(results, backlog, latency, latency_rates, scales)
    report = render(results, rows, events_count=len(messages), distinct=distinct_valid(messages),
                    dense_count=len(dense), sink=sink, backlog=backlog, latency=latency, scales=scales,
                    settings=base, minutes=(time.monotonic() - started) / 60)  # fmt: skip
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
