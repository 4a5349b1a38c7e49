"""A replicated ClickHouse on this machine: ZooKeeper and ClickHouse 18.16 replicas on loopback ports.

What `make test-cluster` runs to prove the cluster schema (docs/scaling.md) on real servers: Debian's
``zookeeper`` package (18.16 speaks ZooKeeper; ClickHouse Keeper came later) and one ClickHouse server per
replica, each with the single server's config (``pingan.services``) plus a ``config.d/cluster.xml`` overlay
(``deploy/clickhouse/cluster/local/``) naming ZooKeeper, its macros and the cluster, and the cluster's
profile settings in ``users.d/`` (``deploy/clickhouse/cluster/users.d/``).

Everything lives under one root directory; processes are stopped when the ``running_cluster`` block ends.
Readiness is a real answer: a ZooKeeper session granted, ``SELECT 1`` on each replica.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import string
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from pingan.errors import ConfigError, ServiceError, StorageError
from pingan.services import (
    clickhouse_argv,
    clickhouse_command,
    free_loopback_ports,
    probe_clickhouse,
    service_paths,
    write_clickhouse_config,
)
from pingan.settings import REPO_ROOT, Settings
from pingan.store.client import connect

log = logging.getLogger(__name__)

CLUSTER_TEMPLATES = REPO_ROOT / "deploy" / "clickhouse" / "cluster"
ZOOKEEPER_PACKAGE = "zookeeper"
# Debian's package: the jar's manifest names its dependencies in /usr/share/java.
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
# slf4j-simple (a dependency of the package) sends ZooKeeper's log to stderr, i.e. to zookeeper.log.
ZOOKEEPER_LOGGER_JAR = Path("/usr/share/java/slf4j-simple.jar")
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_POLL_S = 0.1


@dataclass(frozen=True)
class Replica:
    """One ClickHouse server of the cluster: its macros and the settings that reach it."""

    shard: int
    name: str
    settings: Settings  # clickhouse_* ports and data_dir of this server, clickhouse_cluster set
    interserver_port: int


@dataclass(frozen=True)
class LocalCluster:
    name: str
    root: Path
    zookeeper_port: int
    replicas: tuple[Replica, ...]

    @property
    def zookeeper_dir(self) -> Path:
        return self.root / "zookeeper"

    def shard_replicas(self, shard: int) -> list[Replica]:
        return [r for r in self.replicas if r.shard == shard]


def plan_cluster(
    base: Settings, root: Path, *, name: str = "pingan", shards: int = 1, replicas: int = 2
) -> LocalCluster:
    """Free loopback ports and a data dir per replica; ``base`` supplies the users, database and the rest."""
    if shards < 1 or replicas < 1:
        raise ConfigError("a cluster needs at least one shard of one replica")
    ports = free_loopback_ports(1 + 3 * shards * replicas)
    members = []
    for index in range(shards * replicas):
        tcp, http, interserver = ports[1 + 3 * index : 4 + 3 * index]
        shard, number = index // replicas + 1, index % replicas + 1
        settings = base.model_copy(
            update={
                "data_dir": root / f"s{shard}r{number}",
                "clickhouse_host": LOOPBACK,
                "clickhouse_port": tcp,
                "clickhouse_http_port": http,
                "clickhouse_managed": False,  # started here, not by `pingan services`
                "clickhouse_cluster": name,
            }
        )
        members.append(Replica(shard, f"s{shard}r{number}", settings, interserver))
    return LocalCluster(name, root, ports[0], tuple(members))


# --------------------------------------------------------------------------------------------------------------
# Config files: pure functions of the plan
# --------------------------------------------------------------------------------------------------------------


def render_remote_servers(cluster: LocalCluster) -> str:
    """The ``<shard>`` elements of the cluster's remote_servers entry."""
    lines = []
    for shard in sorted({r.shard for r in cluster.replicas}):
        # internal_replication: a Distributed insert goes to one replica, ReplicatedMergeTree copies it.
        lines.append("            <shard>\n                <internal_replication>true</internal_replication>")
        for replica in cluster.shard_replicas(shard):
            s = replica.settings
            lines.append(
                "                <replica>"
                f"<host>{LOOPBACK}</host><port>{s.clickhouse_port}</port>"
                f"<user>{escape(s.clickhouse_user)}</user>"
                f"<password>{escape(s.clickhouse_password.get_secret_value())}</password>"
                "</replica>"
            )
        lines.append("            </shard>")
    return "\n".join(lines)


def render_replica_config(cluster: LocalCluster, replica: Replica, templates: Path = CLUSTER_TEMPLATES) -> str:
    """``config.d/cluster.xml`` of one replica."""
    template = string.Template((templates / "local" / "cluster.xml.tmpl").read_text())
    return template.substitute(
        interserver_host=LOOPBACK,
        interserver_port=replica.interserver_port,
        zookeeper_host=LOOPBACK,
        zookeeper_port=cluster.zookeeper_port,
        shard=replica.shard,
        replica=escape(replica.name),
        cluster=cluster.name,
        shards=render_remote_servers(cluster),
    )


def render_zookeeper_config(cluster: LocalCluster) -> str:
    return "\n".join(
        [
            "# Written by pingan/cluster_services.py: a standalone ZooKeeper for the local replicated ClickHouse.",
            "tickTime=500",
            f"dataDir={cluster.zookeeper_dir / 'data'}",
            f"clientPort={cluster.zookeeper_port}",
            f"clientPortAddress={LOOPBACK}",
            "maxClientCnxns=0",
            # No admin web server: it would take port 8080.
            "admin.enableServer=false",
            "",
        ]
    )


def zookeeper_argv(config_path: Path) -> list[str]:
    java = shutil.which("java")
    if not ZOOKEEPER_JAR.exists() or java is None:
        raise ServiceError(
            f"ZooKeeper is not installed ({ZOOKEEPER_JAR} or java missing): run `make cluster-tools` "
            f"(sudo apt-get install -y {ZOOKEEPER_PACKAGE})"
        )
    classpath = [str(ZOOKEEPER_JAR), *([str(ZOOKEEPER_LOGGER_JAR)] if ZOOKEEPER_LOGGER_JAR.exists() else [])]
    return [java, "-Xmx256m", "-cp", ":".join(classpath), ZOOKEEPER_MAIN, str(config_path)]


def _read_frame(sock: socket.socket) -> bytes:
    header = sock.recv(4, socket.MSG_WAITALL)
    if len(header) < 4:
        raise ConnectionError("connection closed")
    (size,) = struct.unpack(">i", header)
    return sock.recv(size, socket.MSG_WAITALL)


def probe_zookeeper(port: int, *, timeout: float = 1.0) -> bool:
    """Whether ZooKeeper grants a session (a real handshake, then closes it).

    Not ``ruok``: it answers ``imok`` as soon as the port is open, while connections are still refused
    ("ZooKeeperServer not running"), and a ClickHouse started then fails its first ON CLUSTER query.
    """
    # ConnectRequest: protocol version, last zxid seen, session timeout (ms), session id, password.
    connect = struct.pack(">iqiqi", 0, 0, 4000, 0, 16) + bytes(16)
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(connect)) + connect)
            reply = _read_frame(sock)
            if len(reply) < 16:
                return False
            _version, negotiated_timeout, session_id = struct.unpack_from(">iiq", reply)
            close_session = struct.pack(">ii", 1, -11)  # xid 1, OpCode.closeSession
            sock.sendall(struct.pack(">i", len(close_session)) + close_session)
            return negotiated_timeout > 0 and session_id != 0
    except (OSError, struct.error):
        return False


def replica_ready(settings: Settings) -> bool:
    """A replica answers and has its ZooKeeper session.

    18.16 connects to ZooKeeper lazily; an ON CLUSTER statement that arrives first, while its DDL thread is
    still connecting, crashed the server here (SIGSEGV in zkutil::ZooKeeper::createImpl). Reading
    system.zookeeper opens the session before any DDL arrives.
    """
    if not probe_clickhouse(settings).answering:
        return False
    try:
        executor = connect(settings, database="")
    except StorageError:
        return False
    try:
        return bool(executor.query("SELECT count() FROM system.zookeeper WHERE path = '/'")[0][0])
    except StorageError:
        return False
    finally:
        executor.close()


# --------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


def _launch(name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> _Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_handle:
        popen = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log_handle, stderr=subprocess.STDOUT, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    log.info("started %s (pid %d)", name, popen.pid)
    return _Process(name, popen, log_path)


def _stop(processes: Sequence[_Process], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM all, wait together, SIGKILL what is left at the deadline."""
    for process in processes:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM; killing it", process.name, process.popen.pid)
            process.popen.kill()
            process.popen.wait(timeout=10)


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _wait(what: str, ready: Callable[[], bool], process: _Process, deadline: float) -> None:
    while not ready():
        if process.popen.poll() is not None:
            raise ServiceError(f"{what} exited with code {process.popen.returncode}:\n{_tail(process.log_path)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not answer in time:\n{_tail(process.log_path)}")
        time.sleep(_POLL_S)


def write_replica_files(cluster: LocalCluster, replica: Replica) -> Path:
    """The single server's config plus the cluster overlays, under the replica's data dir; the config path."""
    config_path = write_clickhouse_config(replica.settings)
    base = config_path.parent
    (base / "config.d").mkdir(exist_ok=True)
    (base / "config.d" / "cluster.xml").write_text(render_replica_config(cluster, replica))
    (base / "users.d").mkdir(exist_ok=True)
    for overlay in sorted((CLUSTER_TEMPLATES / "users.d").glob("*.xml")):
        shutil.copyfile(overlay, base / "users.d" / overlay.name)
    return config_path


@contextlib.contextmanager
def running_cluster(cluster: LocalCluster, *, timeout: float = START_TIMEOUT_S) -> Iterator[LocalCluster]:
    """ZooKeeper and every replica running and answering for the duration of the block."""
    deadline = time.monotonic() + timeout
    processes: list[_Process] = []
    try:
        cluster.zookeeper_dir.mkdir(parents=True, exist_ok=True)
        zoo_cfg = cluster.zookeeper_dir / "zoo.cfg"
        zoo_cfg.write_text(render_zookeeper_config(cluster))
        zookeeper = _launch("zookeeper", zookeeper_argv(zoo_cfg), cluster.zookeeper_dir / "zookeeper.log", cluster.root)
        processes.append(zookeeper)
        # Before the replicas: a server that finds no ZooKeeper at start-up fails its first ON CLUSTER query.
        _wait("zookeeper", lambda: probe_zookeeper(cluster.zookeeper_port), zookeeper, deadline)
        command = clickhouse_command()
        servers = []
        for replica in cluster.replicas:
            config_path = write_replica_files(cluster, replica)
            paths = service_paths(replica.settings)
            server = _launch(f"clickhouse {replica.name}", clickhouse_argv(command, config_path),
                             paths.log_file("clickhouse"), paths.data_dir)  # fmt: skip
            processes.append(server)
            servers.append((replica, server))
        for replica, server in servers:
            _wait(f"clickhouse {replica.name}", lambda s=replica.settings: replica_ready(s), server, deadline)
        log.info("cluster %s: zookeeper on %d, %d replicas", cluster.name, cluster.zookeeper_port, len(servers))
        yield cluster
    finally:
        # Replicas first: they hold ZooKeeper sessions and would log reconnect errors while it stops.
        _stop([p for p in processes if p.name != "zookeeper"])
        _stop([p for p in processes if p.name == "zookeeper"])
