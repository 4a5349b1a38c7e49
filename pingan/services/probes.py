"""Whether a service answers: a Kafka Metadata request for the broker, ``SELECT 1`` for ClickHouse; and the
port checks the supervisor and the tests use."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import time
from dataclasses import dataclass

from pingan.services.config import KAFKA, bind_host, split_hostport
from pingan.settings import Settings

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
        host, port = split_hostport(entry)
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
    family = socket.AF_INET6 if ":" in bind_host(host) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same as the servers do, so a recently closed connection does not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host(host), port))
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
