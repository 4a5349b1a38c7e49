"""Ingest gateway throughput on loopback, driven by a load tool.

    make bench-tools        # once: wrk from Debian's packages
    .venv/bin/python bench/ingest_load.py [--seconds 10] [--connections 8] [--write docs/benchmarks.md]

Starts its own broker and ClickHouse on free loopback ports in a temporary directory (ClickHouse only because
the API's start-up migrates it), runs `pingan api` as a separate process (one uvicorn process, as deployed,
access log included), and for batches of 1, 100 and 500 events posts one prepared body of valid call110
events over keep-alive connections for a fixed time with wrk (bench/ingest_post.lua), or with an asyncio
httpx client when wrk is not installed (`--tool httpx` forces it).

Every 200 is sent after the broker acknowledged all of the request's events (acks=all), so events/s counts
broker-acknowledged events. The same body is sent again and again (same event ids): the gateway does not
dedupe, the worker would. After each run the events topic must hold at least every acknowledged event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from pingan import services
from pingan.grids import GridRegistry
from pingan.settings import Settings

DEMO_KEY = "pingan-demo-ingest-key"  # the local demo key of deploy/config/ingest-keys.toml
BATCH_SIZES = (1, 100, 500)
LUA_SCRIPT = Path(__file__).with_name("ingest_post.lua")
NOTE = (
    "One prepared body of valid call110 events is posted over and over (same event ids; the gateway does not "
    "dedupe); each run checks that the events topic gained at least every acknowledged event. Single events are "
    "latency-bound: the shared producer lingers 10 ms to fill batches, so each request waits at least that for its "
    "ack and throughput grows with connections. Batches are CPU-bound: checking a 500-event request takes ~8 ms "
    "in-process; the rest is aiokafka, Tansu and HTTP sharing the same cores."
)


def call110(event_id: str, grid_id: str, at: datetime) -> dict[str, object]:
    return {
        "event_id": event_id, "source": "call110", "type": "dispute", "severity": 3, "event_time": at.isoformat(),
        "grid_id": grid_id,
        "payload": {"incident_id": event_id, "category": "dispute", "priority": 2, "reported_at": at.isoformat()},
    }  # fmt: skip


@dataclass
class Run:
    batch: int
    connections: int
    seconds: float
    requests: int  # answered 2xx
    failed: int  # any other answer or a socket error
    p50_ms: float
    p99_ms: float
    on_topic: int  # events the topic gained during the run (at least batch × requests)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.requests * self.batch / self.seconds


def make_body(registry: GridRegistry, batch: int) -> bytes:
    grids = [grid.grid_id for grid in registry.grids]
    # A minute ago, so the events stay valid (not in the future, within lateness) for the whole run.
    at = datetime.now(UTC) - timedelta(minutes=1)
    events = [call110(f"bench-{batch}-{i}", grids[i % len(grids)], at - timedelta(seconds=i)) for i in range(batch)]
    return orjson.dumps(events[0] if batch == 1 else {"events": events})


class TopicCounter:
    """Counts the records the events topic gains, by reading them.

    End offsets would be cheaper but are not exact on Tansu: it reports a partition's end as the first offset
    of its last produce request + 1 (docs/architecture.md), so a multi-record last request is undercounted.
    """

    def __init__(self, settings: Settings) -> None:
        self._consumer = AIOKafkaConsumer(
            settings.topic_events,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def drain(self, idle_seconds: float = 1.0) -> int:
        """Records read since the last call, once none has arrived for ``idle_seconds``."""
        count = 0
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_seconds:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=50_000)
            read = sum(len(records) for records in batches.values())
            if read:
                count += read
                idle_since = time.monotonic()
        return count


def run_wrk(url: str, body_path: Path, seconds: float, connections: int) -> tuple[int, int, float, float, float]:
    """(2xx requests, failed, seconds, p50 ms, p99 ms) from wrk and the Lua script's RESULT line."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(LUA_SCRIPT), url,
            "--", str(body_path), DEMO_KEY]  # fmt: skip
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^RESULT (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no RESULT line from wrk:\n{output}")
    result = json.loads(match.group(1))
    failed = result["non_2xx"] + result["socket_errors"]
    return (
        result["requests"] - result["non_2xx"],
        failed,
        result["duration_us"] / 1e6,
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
    )


async def run_httpx(url: str, body: bytes, seconds: float, connections: int) -> tuple[int, int, float, float, float]:
    """The same measurement with an asyncio httpx client: one task per keep-alive connection."""
    latencies: list[float] = []
    failed = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {DEMO_KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def loop() -> None:
            nonlocal failed
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                if response.is_success:
                    latencies.append(time.perf_counter() - sent)
                else:
                    failed += 1

        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return len(latencies), failed, elapsed, cuts[49] * 1000, cuts[98] * 1000


async def measure(settings: Settings, registry: GridRegistry, counter: TopicCounter, tool: str, batch: int,
                  seconds: float, connections: int, workdir: Path) -> Run:  # fmt: skip
    url = f"http://127.0.0.1:{settings.api_port}/v1/ingest/call110"
    body = make_body(registry, batch)
    body_path = workdir / f"body-{batch}.json"
    body_path.write_bytes(body)
    await counter.drain()
    if tool == "wrk":
        ok, failed, elapsed, p50, p99 = await asyncio.to_thread(run_wrk, url, body_path, seconds, connections)
    else:
        ok, failed, elapsed, p50, p99 = await run_httpx(url, body, seconds, connections)
    # Requests still in flight when the tool stopped add events it did not count: at least, not exactly.
    on_topic = await counter.drain()
    if on_topic < ok * batch:
        raise RuntimeError(f"batch {batch}: {ok * batch} events acknowledged but only {on_topic} on the topic")
    return Run(batch, connections, elapsed, ok, failed, p50, p99, on_topic)


async def measure_all(settings: Settings, registry: GridRegistry, tool: str, args: argparse.Namespace,
                      workdir: Path) -> list[Run]:  # fmt: skip
    counter = TopicCounter(settings)
    await counter.start()
    try:
        runs = []
        for batch in args.batches:
            run = await measure(settings, registry, counter, tool, batch, args.seconds, args.connections, workdir)
            summary = (
                f"batch {batch}: {run.requests_per_s:,.0f} req/s, {run.events_per_s:,.0f} events/s, "
                f"p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, {run.failed} failed, {run.on_topic} on the topic"
            )
            print(summary, file=sys.stderr)
            runs.append(run)
        return runs
    finally:
        await counter.stop()


def start_api(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`pingan api` with exactly these settings, as ops run it."""
    env = {**os.environ, **settings.as_env()}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pingan.cli", "api"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def stop_api(api: subprocess.Popen[bytes]) -> None:
    if api.poll() is None:
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(timeout=20)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait(timeout=10)


def wait_for_api(settings: Settings, api: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API stopped:\n{log_path.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{settings.api_port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the API did not answer /healthz in time")


def warm_up(settings: Settings, registry: GridRegistry) -> None:
    """One request first: it creates the topics and starts the gateway's producer, which is not measured."""
    response = httpx.post(
        f"http://127.0.0.1:{settings.api_port}/v1/ingest/call110",
        content=make_body(registry, 10),
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(f"warm-up answered {response.status_code}: {response.text}")


def report(runs: list[Run], tool: str, seconds: float) -> str:
    cpu = os.cpu_count()
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: ingest gateway (`bench/ingest_load.py`, {tool})",
        "",
        f"Machine: {cpu} cores, Python {platform.python_version()}; one `pingan api` process (uvicorn, access log "
        f"on), the Tansu broker and the load tool on the same host. {seconds:g} s per batch size; every 2xx is "
        "sent after the broker acknowledged the request's events (acks=all).",
        "",
        "| events per request | connections | requests/s | **events/s** | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.batch} | {run.connections} | {run.requests_per_s:,.0f} | **{run.events_per_s:,.0f}** | "
            f"{run.p50_ms:.1f} | {run.p99_ms:.1f} | {run.failed} |"
        )
    lines += ["", NOTE, ""]
    return "\n".join(lines)


def append_report(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(
            "# Benchmarks\n\nMeasured on this project's machines with the scripts in `bench/`; newest last.\n\n"
        )
    with path.open("a", encoding="utf-8") as out:
        out.write(text + "\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="load time per batch size")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--tool", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--write", type=Path, default=None, help="append the results to this markdown file")
    args = parser.parse_args()
    tool = args.tool if args.tool != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    if tool == "httpx" and args.tool == "auto":
        print("wrk not found (make bench-tools); using the asyncio httpx client", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="pingan-bench-ingest-") as tmp:
        workdir = Path(tmp)
        kafka_port, clickhouse_port, clickhouse_http_port, api_port = services.free_loopback_ports(4)
        settings = Settings(
            data_dir=workdir,
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            clickhouse_port=clickhouse_port,
            clickhouse_http_port=clickhouse_http_port,
            api_port=api_port,
            topic_prefix="bench.",
            ingest_max_batch=max(BATCH_SIZES),
        )
        registry = GridRegistry.load(settings.grid_registry_path)
        with services.running_services(settings):
            log_path = workdir / "api.log"
            api = start_api(settings, log_path)
            try:
                wait_for_api(settings, api, log_path)
                warm_up(settings, registry)
                runs = asyncio.run(measure_all(settings, registry, tool, args, workdir))
            finally:
                stop_api(api)

    text = report(runs, tool, args.seconds)
    print(text)
    if args.write:
        append_report(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
