"""Worker and API as real child processes, and polling with a deadline (never a bare sleep)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from pingan.settings import Settings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def run_cli(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m pingan.cli ARGS` to completion with the given settings; fails the test on a non-zero exit."""
    env = {**os.environ, **settings.as_env()}
    done = subprocess.run(
        [sys.executable, "-m", "pingan.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"pingan {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


class ChildProcess:
    """`python -m pingan.cli COMMAND` with the given settings in its environment, logging to a file."""

    def __init__(
        self,
        command: str,
        settings: Settings,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.command = command
        self.args = tuple(args)  # after the command, e.g. ("sink",) for `pingan dead-letters sink`
        self.settings = settings
        self.log_path = log_path
        self.env = dict(env or {})  # on top of the settings, e.g. PYTHONPATH for a plugin's dist-info
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        env = {**os.environ, **self.settings.as_env(), **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pingan.cli", self.command, *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed or committed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop_seconds(self, within: float) -> float:
        """SIGTERM, and the seconds until the process is gone (fails past ``within``)."""
        assert self.process is not None and self.alive, self.log_tail()
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"SIGTERM: still running after {within:.0f}s\n{self.log_tail()}") from None
        return time.monotonic() - began

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
