"""``/metrics`` in the Prometheus text format: what the API can see of itself and of the pipeline.

Request latency is measured by a middleware per route template (``/v1/grids/{grid_id}``, never the raw
path, so label cardinality stays bounded). The rest is read at scrape time: the map snapshot's age and
version from memory, the worker's lag per partition from the broker (the readiness probe's clients), and
from ClickHouse the events stored per source in the last minutes, dead letters per kind, alerts per level
and the lost logs the worker detected per partition (with those whose window state is still being rebuilt).
Each app has a registry of its own (tests build many apps in one process).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pingan.clock import Clock
from pingan.store import alerts, dead_letters, events, log_losses
from pingan.store.client import Executor

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=5)
# Late events older than this are not in the rate (the floor prunes ClickHouse partitions).
RATE_EVENT_TIME_FLOOR = timedelta(days=2)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MEDIA_TYPE = CONTENT_TYPE_LATEST


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("pingan_api_request_duration_seconds", "API request latency by route template",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.snapshot_age = Gauge("pingan_map_snapshot_age_seconds",
                                  "seconds since the map snapshot was last confirmed current", registry=r)  # fmt: skip
        self.snapshot_version = Gauge("pingan_map_snapshot_version", "version of the map snapshot", registry=r)
        self.grids = Gauge("pingan_map_grids", "grids on the map per shown level", ["level"], registry=r)
        self.lag = Gauge("pingan_worker_lag_events", "events not yet processed by the worker, per partition",
                         ["partition"], registry=r)  # fmt: skip
        self.events_rate = Gauge("pingan_events_stored_per_second",
                                 f"events stored per second over the last {RATE_WINDOW.seconds // 60} min, per source",
                                 ["source"], registry=r)  # fmt: skip
        self.dead_letters = Gauge("pingan_dead_letters", "dead letters stored, per kind", ["kind"], registry=r)
        self.alerts = Gauge("pingan_alerts", "alerts stored, per level and kind", ["level", "kind"], registry=r)
        self.log_losses = Gauge("pingan_worker_log_losses",
                                "lost logs the worker detected since the table began (broker came back empty, topic "
                                "recreated, changelog empty), per topic, partition and reason",
                                ["topic", "partition", "reason"], registry=r)  # fmt: skip
        self.rebuilding = Gauge("pingan_worker_log_loss_rebuilding",
                                "of those, detections whose window state is not yet whole again",
                                ["topic", "partition", "reason"], registry=r)  # fmt: skip
        self.scrape_errors = Gauge("pingan_metrics_source_up", "1 when the source answered this scrape",
                                   ["source"], registry=r)  # fmt: skip

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def set_snapshot(self, age: float | None, version: int | None, levels: dict[str, int]) -> None:
        self.snapshot_age.set(age if age is not None else float("nan"))
        self.snapshot_version.set(version if version is not None else float("nan"))
        for level, count in levels.items():
            self.grids.labels(level).set(count)

    def set_lag(self, worker: dict[str, Any]) -> None:
        self.lag.clear()
        for row in worker.get("partitions") or ():
            self.lag.labels(str(row["partition"])).set(row["lag"])
        self.scrape_errors.labels("broker").set(1 if worker.get("partitions") is not None else 0)

    def read_store(self, executor: Executor, clock: Clock) -> None:
        """The ClickHouse-side figures (blocking; call from a thread)."""
        now = clock.now()
        try:
            stored = events.stored_since_by_source(executor, now - RATE_WINDOW,
                                                   event_time_floor=now - RATE_EVENT_TIME_FLOOR)  # fmt: skip
            kinds = dead_letters.count_by_kind(executor)
            by_level = alerts.count_by_level(executor)
            losses = log_losses.count_by_partition(executor)
        except Exception as exc:  # metrics must still answer with what they have
            log.warning("metrics: ClickHouse figures unavailable: %s", exc)
            self.scrape_errors.labels("clickhouse").set(0)
            return
        self.scrape_errors.labels("clickhouse").set(1)
        self.events_rate.clear()
        for source, count in stored.items():
            self.events_rate.labels(source).set(count / RATE_WINDOW.total_seconds())
        self.dead_letters.clear()
        for kind, count in kinds.items():
            self.dead_letters.labels(kind).set(count)
        self.alerts.clear()
        for (level, kind), count in by_level.items():
            self.alerts.labels(level, kind).set(count)
        self.log_losses.clear()
        self.rebuilding.clear()
        for (topic, partition, reason), (detected, pending) in losses.items():
            self.log_losses.labels(topic, str(partition), reason).set(detected)
            self.rebuilding.labels(topic, str(partition), reason).set(pending)

    async def render(self, resources: Any) -> bytes:
        snapshots = resources.snapshots
        current = snapshots.current
        levels = current.snapshot.grids if current is not None else ()
        counts: dict[str, int] = {}
        for item in levels:
            counts[item["level"]] = counts.get(item["level"], 0) + 1
        self.set_snapshot(snapshots.age_seconds(), current.version if current else None, counts)
        _broker, worker = await resources.kafka.check()
        self.set_lag(worker)
        await anyio.to_thread.run_sync(self.read_store, resources.storage.executor, resources.clock)
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Times every HTTP request and records it under its route template (``unmatched`` for 404s)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - started)
