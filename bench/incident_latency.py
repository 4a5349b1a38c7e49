"""Action latency: a centre POSTs an action, another centre's poll shows it; p50/p99 with a stored history.

Starts its own broker and ClickHouse on free loopback ports (as the tests do) and the API as a child process
with the demo keys file, stores ``alerts`` escalation alerts over the demo district's grids and ``actions``
earlier actions on them (the history every incident read folds), then times ``samples`` notes: the community
centre POSTs one, the subdistrict centre polls `GET /v1/alerts/{alert_id}` until its history has it.

    .venv/bin/python bench/incident_latency.py [samples=200] [alerts=2000] [actions=6000]

Prints a markdown line for docs/benchmarks.md.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from pingan.grids import GridRegistry
from pingan.incidents import Action
from pingan.index.alerts import alert_for
from pingan.services import free_loopback_ports, running_services
from pingan.settings import Settings
from pingan.store import alert_actions, alerts
from pingan.store.client import connect
from pingan.store.migrate import prepare_database

COMMUNITY = {"Authorization": "Bearer pingan-demo-community-key"}
SUBDISTRICT = {"Authorization": "Bearer pingan-demo-subdistrict-key"}


def seed(settings: Settings, registry: GridRegistry, n_alerts: int, n_actions: int) -> str:
    """Store the history; return the alert id of an incident of the community's own grid to act on."""
    prepare_database(settings)
    executor = connect(settings)
    try:
        rng = random.Random(14)
        start = datetime.now(UTC) - timedelta(days=7)
        grids = [g.grid_id for g in registry.grids]
        made = []
        for n in range(n_alerts):
            at = start + timedelta(seconds=n * 7 * 86400 / n_alerts)
            grid = grids[0] if n == n_alerts - 1 else rng.choice(grids)
            made.append(alert_for(grid, "yellow", rng.choice(["orange", "red"]), 150.0, at,
                                         int(at.timestamp() * 1000), {}, "bench"))  # fmt: skip
        stored = [a for a in made if a is not None]
        alerts.insert(executor, stored)
        actions = []
        for n in range(n_actions):
            alert = rng.choice(stored[:-1])
            actions.append(Action(uuid.uuid4().hex, alert.alert_id, alert.grid_id, "note", "bench",
                                  alert.as_of + timedelta(seconds=60 + n % 600), note="seed",
                                  incident_id=alert.alert_id))  # fmt: skip
        alert_actions.insert(executor, actions)
        return stored[-1].alert_id
    finally:
        executor.close()


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    n_alerts = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    n_actions = int(sys.argv[3]) if len(sys.argv) > 3 else 6000
    kafka, native, http, api_port = free_loopback_ports(4)
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(
            data_dir=Path(data), kafka_bootstrap=f"127.0.0.1:{kafka}", kafka_managed=True,
            clickhouse_host="127.0.0.1", clickhouse_port=native, clickhouse_http_port=http, clickhouse_managed=True,
            clickhouse_user="default", clickhouse_password="", clickhouse_database="bench_incidents",
            topic_prefix="bench.", api_port=api_port, api_open_read=False,
        )  # fmt: skip
        with running_services(settings):
            registry = GridRegistry.load(settings.grid_registry_path)
            alert_id = seed(settings, registry, n_alerts, n_actions)
            env = {**os.environ, **settings.as_env()}
            log = open(Path(data) / "api.log", "wb")  # noqa: SIM115 - the child writes it until the end
            api = subprocess.Popen([sys.executable, "-m", "pingan.cli", "api"], env=env, stdout=log, stderr=log)
            base = f"http://127.0.0.1:{api_port}"
            try:
                with httpx.Client(base_url=base, timeout=10) as client:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        try:
                            if client.get("/healthz").status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                    latencies = []
                    for n in range(samples):
                        action_id = f"bench-{n}"
                        started = time.perf_counter()
                        note = {"kind": "note", "note": f"n{n}", "action_id": action_id}
                        answer = client.post(f"/v1/alerts/{alert_id}/actions", headers=COMMUNITY, json=note)
                        answer.raise_for_status()
                        while True:
                            body = client.get(f"/v1/alerts/{alert_id}", headers=SUBDISTRICT).json()
                            if any(h["action_id"] == action_id for h in body["incident"]["history"]):
                                break
                        latencies.append(time.perf_counter() - started)
            finally:
                api.terminate()
                api.wait(timeout=20)
                log.close()
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(f"| {samples} actions | {n_alerts:,} alerts, {n_actions:,} earlier actions stored | "
          f"p50 {p50:.0f} ms | p99 {p99:.0f} ms | max {ordered[-1] * 1000:.0f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
