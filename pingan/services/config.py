"""What to run for the local services: pure functions of the settings (addresses, whether pingan manages a
service, the broker's command line, ClickHouse's rendered config.xml and users.xml)."""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from pingan.errors import ConfigError
from pingan.settings import REPO_ROOT, Settings, is_loopback

KAFKA = "kafka"
CLICKHOUSE = "clickhouse"
SERVICE_NAMES = (KAFKA, CLICKHOUSE)

CLICKHOUSE_TEMPLATES = REPO_ROOT / "deploy" / "clickhouse" / "server"
_XML_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"


def split_hostport(hostport: str) -> tuple[str, int]:
    host, sep, port = hostport.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{hostport!r} is not a host:port address")
    return host.strip("[]"), int(port)


def bind_host(host: str) -> str:
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
    host, port = split_hostport(entries[0])
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
    listen = f"tcp://{bind_host(spec.host)}:{spec.port}"
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
        "listen_host": escape(bind_host(settings.clickhouse_host)),
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
