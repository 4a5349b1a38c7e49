"""`pingan services up|down|status` with real processes: the broker, ClickHouse 18.16, and strangers."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from pingan import services as svc
from pingan.cli import main
from pingan.errors import ServiceError
from pingan.settings import Settings
from tests.conftest import clickhouse_client_for
from tests.support.defaults import default_settings

pytestmark = pytest.mark.integration


def _own_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for services of this test alone (not the session's), on fresh ports."""
    kafka_port, clickhouse_port, http_port = svc.free_loopback_ports(3)
    values: dict[str, object] = {
        "data_dir": data_dir,
        "kafka_bootstrap": f"127.0.0.1:{kafka_port}",
        "kafka_managed": True,
        "clickhouse_host": "127.0.0.1",
        "clickhouse_port": clickhouse_port,
        "clickhouse_http_port": http_port,
        "clickhouse_managed": True,
        "clickhouse_user": "default",
        "clickhouse_password": "",
    }
    values.update(overrides)
    return default_settings(**values)


@pytest.fixture
def own_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = _own_settings(tmp_path / "state")
    yield settings
    svc.down(settings)  # whatever a failing test left behind


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process pingan did not start, listening on a loopback port (printed on its first line)."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); sys.stdin.read()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    yield process
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    process.wait(timeout=10)
    process.stdout.close()


def _port_of(process: subprocess.Popen[bytes]) -> int:
    assert process.stdout is not None
    return int(process.stdout.readline())


def test_up_is_idempotent_and_down_stops_what_up_started(own_settings: Settings, capsys, monkeypatch):
    first = svc.up(own_settings)
    assert [(h.name, h.managed, h.started) for h in first] == [("kafka", True, True), ("clickhouse", True, True)]
    run_dir = own_settings.data_dir / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["clickhouse.pid", "kafka.pid"]
    assert (own_settings.data_dir / "logs" / "kafka.log").exists()

    again = svc.up(own_settings)
    assert [(h.pid, h.started) for h in again] == [(h.pid, False) for h in first]

    report = {s.name: s for s in svc.status(own_settings)}
    assert all(s.managed and s.answering for s in report.values())
    assert [report[h.name].pid for h in first] == [h.pid for h in first]
    for name, value in own_settings.as_env().items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["services", "up"]) == 0
    assert "already running" in capsys.readouterr().out
    assert main(["services", "status"]) == 0
    assert capsys.readouterr().out.count(" answering") == 2

    assert svc.down(own_settings) == ["kafka", "clickhouse"]
    assert not list(run_dir.iterdir())
    assert not any(s.answering or s.pid for s in svc.status(own_settings, timeout=0.5))
    assert svc.down(own_settings) == []


async def test_a_started_broker_serves_real_clients(services: Settings):
    topic = f"{services.topic_prefix}probe-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, b"hello")
    finally:
        await producer.stop()
    assert metadata.topic == topic and metadata.offset == 0


def test_down_stops_only_what_it_started(own_settings: Settings, services: Settings, stranger):
    stranger_port = _port_of(stranger)
    svc.up(own_settings)
    # Another data dir's `down` (and a stale pid file naming the stranger) must not touch anything else.
    other = _own_settings(own_settings.data_dir.parent / "other")
    pid_file = other.data_dir / "run" / "kafka.pid"
    pid_file.parent.mkdir(parents=True)
    forged = svc.PidRecord(stranger.pid, ("tansu", "broker"), f"127.0.0.1:{stranger_port}", "then")
    pid_file.write_text(forged.to_json())
    assert svc.down(other) == []
    assert stranger.poll() is None
    assert not pid_file.exists()  # stale: the pid is alive but is not the recorded command

    assert svc.down(own_settings) == ["kafka", "clickhouse"]
    assert stranger.poll() is None
    assert all(s.answering for s in svc.status(services))  # the session's services live on


def test_up_refuses_a_port_taken_by_a_stranger(own_settings: Settings, stranger):
    taken = own_settings.model_copy(update={"clickhouse_http_port": _port_of(stranger)})
    with pytest.raises(ServiceError, match=r"already in use by a process pingan did not start"):
        svc.up(taken)
    # The broker it had started before finding out is stopped again; nothing is left running or recorded.
    assert not list((own_settings.data_dir / "run").iterdir())
    assert not svc.probe_kafka(own_settings, timeout=0.5).answering


def test_external_services_are_probed_never_started(tmp_path: Path, services: Settings):
    external = default_settings(
        data_dir=tmp_path / "state",
        kafka_bootstrap=services.kafka_bootstrap,
        kafka_managed=False,
        clickhouse_host=services.clickhouse_host,
        clickhouse_port=services.clickhouse_port,
        clickhouse_managed=False,
    )
    handles = svc.up(external)
    assert [(h.managed, h.pid, h.started) for h in handles] == [(False, None, False), (False, None, False)]
    assert not (tmp_path / "state" / "run").exists()
    assert [(s.managed, s.pid, s.answering) for s in svc.status(external)] == [(False, None, True)] * 2
    assert svc.down(external) == []
    assert all(s.answering for s in svc.status(services))

    (dead_port,) = svc.free_loopback_ports(1)
    unreachable = default_settings(data_dir=tmp_path / "state", kafka_bootstrap=f"127.0.0.1:{dead_port}",
                                   kafka_managed=False, clickhouse_port=services.clickhouse_port,
                                   clickhouse_managed=False)  # fmt: skip
    with pytest.raises(ServiceError, match=r"kafka did not answer .*external: pingan does not start it"):
        svc.up(unreachable, timeout=1)
    assert not svc.port_in_use("127.0.0.1", dead_port)


def test_a_service_that_dies_at_start_fails_with_its_log(own_settings: Settings, monkeypatch):
    def crashing_broker(binary: object, spec: svc.ServiceSpec) -> list[str]:
        return [sys.executable, "-c", "import sys; print('broker says: boom', flush=True); sys.exit(3)"]

    monkeypatch.setattr(svc.supervision, "kafka_argv", crashing_broker)
    with pytest.raises(ServiceError) as failure:
        svc.up(own_settings)
    message = str(failure.value)
    assert "kafka exited with exit code 3" in message and "broker says: boom" in message
    # ClickHouse, started in the same call, is stopped again.
    assert not list((own_settings.data_dir / "run").iterdir())


# --- the ClickHouse users -------------------------------------------------------------------------------


def test_default_user_creates_low_cardinality_tables(clickhouse_client: Client):
    clickhouse_client.execute(
        "CREATE TABLE lc (grid_id LowCardinality(String), n UInt32) ENGINE = MergeTree() ORDER BY (grid_id, n)"
    )
    clickhouse_client.execute("INSERT INTO lc (grid_id, n) VALUES", [("g-1", 1), ("g-2", 2), ("g-1", 3)])
    rows = clickhouse_client.execute("SELECT grid_id, count() FROM lc GROUP BY grid_id ORDER BY grid_id")
    assert rows == [("g-1", 2), ("g-2", 1)]


@pytest.fixture
def analyst(settings: Settings) -> Iterator[Client]:
    client = clickhouse_client_for(
        settings,
        database=settings.clickhouse_database,
        user=settings.clickhouse_analyst_user,
        password=settings.clickhouse_analyst_password.get_secret_value(),
    )
    yield client
    client.disconnect()


def test_analyst_reads_but_cannot_write(clickhouse_client: Client, analyst: Client):
    clickhouse_client.execute("CREATE TABLE t (level LowCardinality(String), n UInt8) ENGINE = MergeTree() ORDER BY n")
    clickhouse_client.execute("INSERT INTO t (level, n) VALUES", [("red", 1), ("green", 2)])

    assert analyst.execute("SELECT level FROM t ORDER BY n") == [("red",), ("green",)]
    for sql, rows in [
        ("INSERT INTO t (level, n) VALUES", [("orange", 3)]),
        ("CREATE TABLE t2 (n UInt8) ENGINE = Memory", None),
        ("DROP TABLE t", None),
        ("SET max_threads = 1", None),
    ]:
        with pytest.raises(ServerException) as refused:
            analyst.execute(sql, rows) if rows else analyst.execute(sql)
        assert refused.value.code == 164, sql  # READONLY
    assert clickhouse_client.execute("SELECT count() FROM t") == [(2,)]


def test_analyst_password_is_checked(settings: Settings):
    client = clickhouse_client_for(settings, user=settings.clickhouse_analyst_user, password="wrong")
    try:
        with pytest.raises(ServerException) as refused:
            client.execute("SELECT 1")
        assert refused.value.code in (193, 516)  # WRONG_PASSWORD on 18.16, AUTHENTICATION_FAILED later
    finally:
        client.disconnect()
