"""Readiness probes: the broker answers metadata, ClickHouse answers a query, the worker keeps up, and what
the worker found when the broker lost a log (``log_losses``, written by the worker: see streams/log_loss.py).

Every probe has a hard deadline, so a blackholed broker or a stuck server makes ``/readyz`` say 503
within a few seconds instead of hanging the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import anyio.to_thread
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pingan.api.storage import Storage
from pingan.clock import Clock
from pingan.settings import Settings
from pingan.store import log_losses

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0
# Above this many unprocessed events the worker is reported "lagging" (reported only: the API still
# serves what ClickHouse has, and a backlog after a restart is normal).
LAG_WARNING_EVENTS = 100_000
# Lost logs detected this recently are shown in /readyz (older ones stay in ClickHouse and in /metrics).
LOG_LOSS_WINDOW = timedelta(hours=24)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    return f"{type(exc).__name__}: {exc}".strip()


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def worker_status(total_lag: int | None, any_committed: bool, threshold: int = LAG_WARNING_EVENTS) -> str:
    if total_lag is None:
        return "unknown"
    if not any_committed:
        # The group never committed: no worker has consumed this topic yet (or it has not started).
        return "not_consuming" if total_lag > 0 else "idle"
    return "lagging" if total_lag > threshold else "ok"


def partition_lag(committed: int | None, begin: int, end: int) -> int:
    """Events not yet processed in one partition; a group with no commit starts from the log start."""
    position = begin if committed is None or committed < 0 else max(committed, begin)
    return max(end - position, 0)


class KafkaProbe:
    """Kafka clients for readiness, created on first use and rebuilt after a failure.

    Owned by the app's lifespan; created lazily so the API starts while the broker is down.
    """

    def __init__(self, settings: Settings, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self._settings = settings
        self._timeout = timeout
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        async with self._lock:
            if self._admin is None or self._consumer is None:
                timeout_ms = int(self._timeout * 1000)
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self._settings.kafka_bootstrap,
                    client_id="pingan-api-readiness",
                    request_timeout_ms=timeout_ms,
                )
                # No group: this consumer only asks for end offsets, it never joins the worker's group.
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._settings.kafka_bootstrap,
                    client_id="pingan-api-readiness",
                    group_id=None,
                    enable_auto_commit=False,
                    request_timeout_ms=timeout_ms,
                )
                try:
                    await admin.start()
                    await consumer.start()
                except BaseException:
                    await self._close_clients(admin, consumer)
                    raise
                self._admin, self._consumer = admin, consumer
            return self._admin, self._consumer

    @staticmethod
    async def _close_clients(admin: AIOKafkaAdminClient | None, consumer: AIOKafkaConsumer | None) -> None:
        for close in (consumer.stop if consumer else None, admin.close if admin else None):
            if close is None:
                continue
            try:
                await close()
            except Exception:
                log.debug("closing a readiness Kafka client failed", exc_info=True)

    async def _reset(self) -> None:
        async with self._lock:
            admin, consumer = self._admin, self._consumer
            self._admin = self._consumer = None
        await self._close_clients(admin, consumer)

    async def check(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(broker report, worker report)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                admin, consumer = await self._clients()
                # Metadata for all topics, never for one by name: asking for a missing topic by name makes
                # brokers with auto-creation (Tansu here) create it.
                topics = await admin.describe_topics(None)
        except Exception as exc:
            await self._reset()
            error = _describe(exc)
            return (
                {"ok": False, "latency_ms": _elapsed_ms(started), "error": error},
                {"status": "unknown", "group": self._settings.worker_id, "topic": self._settings.topic_events,
                 "lag": None, "error": "broker unavailable"},
            )  # fmt: skip
        broker = {"ok": True, "latency_ms": _elapsed_ms(started), "topics": len(topics)}
        return broker, await self._worker_lag(admin, consumer, topics)

    async def _worker_lag(
        self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, topics: list[dict[str, Any]]
    ) -> dict[str, Any]:
        topic, group = self._settings.topic_events, self._settings.worker_id
        report: dict[str, Any] = {"status": "unknown", "group": group, "topic": topic, "lag": None}
        partitions = next((t["partitions"] for t in topics if t["topic"] == topic and not t["error_code"]), None)
        if not partitions:
            report["status"] = "no_topic"
            return report
        tps = sorted((TopicPartition(topic, p["partition"]) for p in partitions), key=lambda tp: tp.partition)
        try:
            async with asyncio.timeout(self._timeout):
                # Partitions are always named: Tansu answers an all-partitions OffsetFetch with a frame
                # aiokafka cannot decode.
                committed = await admin.list_consumer_group_offsets(group, partitions=tps)
                # Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1, not the
                # offset after its last record: on the local broker the lag is a lower bound.
                ends = await consumer.end_offsets(tps)
                begins = await consumer.beginning_offsets(tps)
        except Exception as exc:
            await self._reset()
            report["error"] = _describe(exc)
            return report
        rows = []
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            rows.append({"partition": tp.partition, "committed": offset, "end": ends[tp],
                         "lag": partition_lag(offset, begins[tp], ends[tp])})  # fmt: skip
        total = sum(r["lag"] for r in rows)
        any_committed = any(r["committed"] is not None for r in rows)
        report.update(status=worker_status(total, any_committed), lag=total, partitions=rows)
        return report

    async def close(self) -> None:
        await self._reset()


async def check_clickhouse(storage: Storage, timeout: float = PROBE_TIMEOUT_SECONDS) -> dict[str, Any]:
    started = time.perf_counter()

    def probe() -> str:
        storage.ensure_schema()
        return storage.server_version()

    try:
        # On a stuck server the thread is abandoned at the deadline instead of holding the endpoint.
        async with asyncio.timeout(timeout):
            version = await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
    except Exception as exc:
        return {"ok": False, "latency_ms": _elapsed_ms(started), "error": _describe(exc)}
    return {"ok": True, "latency_ms": _elapsed_ms(started), "version": version}


async def check_log_losses(storage: Storage, clock: Clock, timeout: float = PROBE_TIMEOUT_SECONDS) -> dict[str, Any]:
    """The lost logs the worker detected in the last LOG_LOSS_WINDOW, newest first, and how many partitions
    still wait for their window state to be rebuilt.

    The worker's own record: the API cannot tell a lost log from the broker's answers (Tansu reports a lower
    bound of a partition's end, so a committed offset beyond it is normal there)."""
    since = clock.now() - LOG_LOSS_WINDOW

    def read() -> list[log_losses.LogLoss]:
        return log_losses.recent(storage.executor, since)

    try:
        async with asyncio.timeout(timeout):
            found = await anyio.to_thread.run_sync(read, abandon_on_cancel=True)
    except Exception as exc:
        return {"error": _describe(exc)}
    return {
        "since": since.isoformat(),
        "rebuilding": sum(1 for loss in found if not loss.rebuilt),
        "detected": [loss.document() for loss in found],
    }


def with_log_losses(worker: dict[str, Any], losses: dict[str, Any]) -> dict[str, Any]:
    """The worker's report with its lost logs; its status says "rebuilding" while a partition's state is not
    whole again (the API still serves what ClickHouse holds, so it stays ready)."""
    if losses.get("rebuilding"):
        worker = {**worker, "status": "rebuilding"}
    return {**worker, "log_losses": losses}
