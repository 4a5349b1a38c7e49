"""`make demo`: broker, ClickHouse, worker, API and a simulated city on loopback, then the URL.

Runs in the foreground; Ctrl-C stops the worker, API and simulator, then the services it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from pingan import services
from pingan.index.levels import Level
from pingan.settings import Settings

READY_TIMEOUT_S = 90.0


def _spawn(settings: Settings, command: str, log_name: str, *args: str) -> subprocess.Popen[bytes]:
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.as_env()}
    # The child keeps its own descriptor of the log; ours can close at once.
    with open(log_dir / log_name, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "pingan.cli", command, *args], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )


@contextlib.contextmanager
def running_pipeline(settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker, API, simulator and the dead-letter sink (which stores the gateway's and the tailer's dead letters
    in the table) as child processes; stopped (SIGTERM, then SIGKILL) on exit."""
    children = [
        _spawn(settings, "worker", "worker.log"),
        _spawn(settings, "api", "api.log"),
        _spawn(settings, "simulate", "simulator.log"),
        _spawn(settings, "dead-letters", "dead-letter-sink.log", "sink"),
    ]
    try:
        yield children
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_until_coloured(url: str, children: list[subprocess.Popen[bytes]], timeout_s: float) -> dict:
    """Poll the risk endpoint until every grid is there and at least one is not green."""
    deadline = time.monotonic() + timeout_s
    last = "API not answering yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            for child in children:
                if child.poll() is not None:
                    raise RuntimeError(f"{child.args[-1]} exited with {child.returncode}; see .pingan/logs/")
            try:
                body = client.get(url).json()
                summary = body.get("summary", {})
                if len(body.get("grids", [])) >= 900 and sum(n for lvl, n in summary.get("levels", {}).items()
                                                              if lvl != Level.GREEN) > 0:  # fmt: skip
                    return body
                last = f"{len(body.get('grids', []))} grids, levels {summary.get('levels')}"
            except (httpx.HTTPError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.5)
    raise RuntimeError(f"the map did not colour within {timeout_s:.0f}s ({last})")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM both end the demo cleanly, even when started in the background (where SIGINT
    arrives ignored). The previous handlers come back afterwards."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(settings: Settings, *, exit_when_ready: bool = False) -> int:
    with _stop_on_signals():
        return _run_demo(settings, exit_when_ready=exit_when_ready)


def _run_demo(settings: Settings, *, exit_when_ready: bool) -> int:
    # The readiness poll below would otherwise log every request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    print("starting services (broker, ClickHouse)...", flush=True)
    services.up(settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    with running_pipeline(settings) as children:
        body = wait_until_coloured(f"{base}/v1/grids/risk", children, READY_TIMEOUT_S)
        levels = body["summary"]["levels"]
        print(f"\nPingan is running ({time.monotonic() - started:.0f}s to a coloured map): {levels}")
        print(f"  live map     {base}/                       (open in a browser)")
        print(f"  risk API     {base}/v1/grids/risk          (?format=geojson for the polygons)")
        print(f"  hot spots    {base}/v1/hotspots")
        print(f"  API docs     {base}/docs")
        print(f"  logs         {settings.data_dir / 'logs'}")
        print("Ctrl-C stops the demo.", flush=True)
        if exit_when_ready:
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            while all(child.poll() is None for child in children):
                time.sleep(1)
    print("stopped worker, API and simulator; `pingan services down` stops the broker and ClickHouse")
    return 0
