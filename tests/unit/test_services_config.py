"""The pure parts of pingan/services/ (config, probes, supervision): what runs where, the rendered ClickHouse
config, the Kafka probe's wire format, pid files. No process is started here."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydantic import SecretStr

from pingan import services
from pingan.errors import ConfigError, ServiceError
from pingan.settings import Settings, is_loopback
from tests.support.defaults import default_settings


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "state",
        "kafka_bootstrap": "127.0.0.1:19092",
        "clickhouse_host": "127.0.0.1",
        "clickhouse_port": 19000,
        "clickhouse_http_port": 18123,
        "clickhouse_user": "default",
        "clickhouse_password": "",
        "clickhouse_analyst_user": "analyst",
        "clickhouse_analyst_password": "s3cret",
        "kafka_managed": None,
        "clickhouse_managed": None,
    }
    values.update(overrides)
    return default_settings(**values)


# --- managed or external --------------------------------------------------------------------------------


def test_loopback_addresses_are_managed(tmp_path):
    specs = {spec.name: spec for spec in services.service_specs(_settings(tmp_path))}
    assert specs["kafka"].managed and specs["kafka"].address == "127.0.0.1:19092"
    assert specs["clickhouse"].managed and specs["clickhouse"].ports == (19000, 18123)


@pytest.mark.parametrize("bootstrap", ["kafka:9092", "10.0.0.5:9092", "127.0.0.1:19092,kafka-2:9092"])
def test_any_non_loopback_broker_is_external(tmp_path, bootstrap):
    spec = services.kafka_spec(_settings(tmp_path, kafka_bootstrap=bootstrap))
    assert not spec.managed


def test_external_clickhouse_binds_nothing(tmp_path):
    spec = services.clickhouse_spec(_settings(tmp_path, clickhouse_host="clickhouse", clickhouse_port=9000))
    assert not spec.managed
    assert spec.ports == (9000,)  # only probed: its HTTP port is none of our business


def test_explicit_flags_win_over_the_address(tmp_path):
    settings = _settings(tmp_path, kafka_managed=False, clickhouse_managed=False)
    assert not any(spec.managed for spec in services.service_specs(settings))


@pytest.mark.parametrize(
    "overrides",
    [
        {"kafka_bootstrap": "kafka:9092", "kafka_managed": True},
        {"clickhouse_host": "db.example", "clickhouse_managed": True},
    ],
)
def test_a_managed_service_is_never_exposed_beyond_loopback(tmp_path, overrides):
    with pytest.raises(ConfigError, match="loopback only"):
        services.service_specs(_settings(tmp_path, **overrides))


def test_kafka_listens_and_advertises_the_bootstrap_address(tmp_path):
    spec = services.kafka_spec(_settings(tmp_path, kafka_bootstrap="localhost:19555"))
    argv = services.kafka_argv("/bin/tansu", spec)
    assert argv[:2] == ["/bin/tansu", "broker"]
    assert argv[argv.index("--listener-url") + 1] == "tcp://127.0.0.1:19555"
    assert argv[argv.index("--advertised-listener-url") + 1] == "tcp://localhost:19555"
    assert argv[argv.index("--storage-engine") + 1] == "memory://tansu/"


# --- ClickHouse config ----------------------------------------------------------------------------------


def test_config_keeps_everything_under_the_data_dir_on_loopback(tmp_path):
    settings = _settings(tmp_path)
    root = ET.fromstring(services.render_clickhouse_config(settings)["config.xml"])
    state = str((tmp_path / "state").resolve())
    assert root.findtext("listen_host") == "127.0.0.1"
    assert root.findtext("tcp_port") == "19000"
    assert root.findtext("http_port") == "18123"
    assert root.find("interserver_http_port") is None
    for tag in ("path", "tmp_path", "user_files_path", "format_schema_path"):
        value = root.findtext(tag)
        assert value is not None and value.startswith(state + "/") and value.endswith("/"), tag
    assert root.findtext("users_config") == f"{state}/clickhouse/users.xml"
    assert root.findtext("logger/log", "").startswith(f"{state}/logs/")
    assert int(root.findtext("mark_cache_size", "0")) <= 256 * 1024 * 1024


def test_users_allow_low_cardinality_and_make_the_analyst_read_only(tmp_path):
    root = ET.fromstring(services.render_clickhouse_config(_settings(tmp_path))["users.xml"])
    assert root.findtext("profiles/default/allow_experimental_low_cardinality_type") == "1"
    assert root.findtext("profiles/readonly/readonly") == "1"
    assert root.findtext("profiles/readonly/allow_experimental_low_cardinality_type") == "1"

    writer = root.find("users/default")
    assert writer is not None and writer.findtext("password") == "" and writer.findtext("profile") == "default"
    assert sorted(ip.text or "" for ip in writer.findall("networks/ip")) == ["127.0.0.1", "::1"]

    analyst = root.find("users/analyst")
    assert analyst is not None and analyst.findtext("profile") == "readonly"
    assert analyst.findtext("password_sha256_hex") == hashlib.sha256(b"s3cret").hexdigest()
    assert "s3cret" not in services.render_clickhouse_config(_settings(tmp_path))["users.xml"]


def test_user_names_come_from_the_settings(tmp_path):
    settings = _settings(tmp_path, clickhouse_user="pingan", clickhouse_password="pw", clickhouse_analyst_user="bi")
    root = ET.fromstring(services.render_clickhouse_config(settings)["users.xml"])
    assert root.findtext("users/pingan/password_sha256_hex") == hashlib.sha256(b"pw").hexdigest()
    assert root.findtext("users/bi/profile") == "readonly"


@pytest.mark.parametrize(
    "overrides",
    [
        {"clickhouse_user": "bad name"},
        {"clickhouse_analyst_user": "<x>"},
        {"clickhouse_analyst_user": "default"},
        {"clickhouse_http_port": 19000},
    ],
)
def test_config_errors_are_caught_before_starting(tmp_path, overrides):
    with pytest.raises(ConfigError):
        settings = _settings(tmp_path, **overrides)
        services.clickhouse_spec(settings)
        services.render_clickhouse_config(settings)


def test_paths_with_xml_characters_are_escaped(tmp_path):
    settings = _settings(tmp_path, data_dir=tmp_path / "a&b<c")
    root = ET.fromstring(services.render_clickhouse_config(settings)["config.xml"])
    assert "a&b<c" in (root.findtext("path") or "")


def test_written_config_is_private_and_directories_exist(tmp_path):
    settings = _settings(tmp_path, clickhouse_analyst_password=SecretStr("x"))
    config = services.write_clickhouse_config(settings)
    base = config.parent
    assert config == (tmp_path / "state" / "clickhouse" / "config.xml").resolve()
    assert stat.S_IMODE(os.stat(base / "users.xml").st_mode) == 0o600
    for sub in ("data", "tmp", "user_files", "format_schemas"):
        assert (base / sub).is_dir()
    assert services.clickhouse_argv(["/usr/sbin/clickhouse-server"], config) == [
        "/usr/sbin/clickhouse-server",
        f"--config-file={config}",
    ]


def test_templates_have_only_known_placeholders(tmp_path):
    # A new ${name} in a template without a value must fail at render time, not produce a broken server.
    bad = tmp_path / "templates"
    bad.mkdir()
    (bad / "config.xml.tmpl").write_text("<yandex><x>${unknown}</x></yandex>")
    (bad / "users.xml.tmpl").write_text("<yandex/>")
    with pytest.raises(ConfigError, match="placeholder"):
        services.render_clickhouse_config(_settings(tmp_path), templates=bad)


# --- Kafka probe wire format ----------------------------------------------------------------------------


def test_metadata_request_is_v4_for_no_topics():
    frame = services.encode_metadata_request(42)
    (size,) = struct.unpack(">i", frame[:4])
    assert size == len(frame) - 4
    api_key, version, correlation_id, client_len = struct.unpack(">hhih", frame[4:14])
    assert (api_key, version, correlation_id) == (3, 4, 42)
    assert frame[14 + client_len :] == struct.pack(">ib", 0, 0)


def _metadata_response(correlation_id: int, brokers: list[tuple[int, str, int, str | None]]) -> bytes:
    out = struct.pack(">iii", correlation_id, 0, len(brokers))
    for node_id, host, port, rack in brokers:
        out += struct.pack(">ih", node_id, len(host)) + host.encode() + struct.pack(">i", port)
        out += struct.pack(">h", -1) if rack is None else struct.pack(">h", len(rack)) + rack.encode()
    return out + struct.pack(">hi", -1, 1) + struct.pack(">i", 0)  # cluster id, controller, no topics


def test_metadata_response_yields_the_advertised_brokers():
    payload = _metadata_response(7, [(1, "kafka-1", 9092, None), (2, "kafka-2", 9093, "rack-a")])
    assert services.decode_metadata_brokers(payload, 7) == [(1, "kafka-1", 9092), (2, "kafka-2", 9093)]


@pytest.mark.parametrize("payload", [_metadata_response(8, []), b"\x00\x00", b"HTTP/1.1 400 Bad Request\r\n"])
def test_anything_else_is_not_a_metadata_response(payload):
    with pytest.raises(ValueError):
        services.decode_metadata_brokers(payload, 7)


def test_a_port_without_a_broker_is_not_answering(tmp_path):
    (port,) = services.free_loopback_ports(1)
    result = services.probe_kafka(_settings(tmp_path, kafka_bootstrap=f"127.0.0.1:{port}"), timeout=0.5)
    assert not result.answering and str(port) in result.detail


# --- ports and pid files --------------------------------------------------------------------------------


def test_port_in_use_sees_a_listener():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert services.port_in_use("127.0.0.1", port)
    assert not services.port_in_use("127.0.0.1", port)


def test_free_ports_are_distinct():
    ports = services.free_loopback_ports(5)
    assert len(set(ports)) == 5


def test_pid_record_round_trips_and_identifies_its_process(tmp_path):
    me = services.PidRecord(os.getpid(), tuple(Path("/proc/self/cmdline").read_bytes().decode().split("\0")[:-1]),
                            "127.0.0.1:1", "now")  # fmt: skip
    assert services.PidRecord.from_json(me.to_json()) == me
    assert services.is_running(me)
    # Same pid, different command line: the pid was reused by something else; never signal it.
    assert not services.is_running(services.PidRecord(os.getpid(), (sys.executable, "other"), "x", "now"))


def test_unreadable_or_missing_pid_files_mean_not_running(tmp_path):
    assert services.read_pid_record(tmp_path / "missing.pid") is None
    (tmp_path / "junk.pid").write_text("12345")
    assert services.read_pid_record(tmp_path / "junk.pid") is None


# --- a missing ClickHouse ---------------------------------------------------------------------------------


def test_a_missing_server_is_reported_with_the_command_that_installs_it(monkeypatch):
    monkeypatch.setattr(services.supervision, "clickhouse_server_command", lambda: None)
    # Reported, never installed from here: `make install` (the Makefile's clickhouse step) installs it.
    monkeypatch.setattr(services.supervision.subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    with pytest.raises(ServiceError, match=r"make install.*apt-get install -y clickhouse-server clickhouse-client"):
        services.clickhouse_command()


def test_an_installed_server_is_used_as_found(monkeypatch):
    monkeypatch.setattr(services.supervision, "clickhouse_server_command", lambda: ["/usr/sbin/clickhouse-server"])
    assert services.clickhouse_command() == ["/usr/sbin/clickhouse-server"]


def test_one_loopback_test_for_settings_and_services() -> None:
    # Bracketed IPv6 too: a bootstrap of "[::1]:9092" is managed like "127.0.0.1:9092".
    assert [is_loopback(h) for h in ("localhost", "127.0.0.1", "127.8.0.1", "::1", "[::1]")] == [True] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "example.org", "[2001:db8::1]")] == [False] * 4
    assert default_settings(kafka_bootstrap="[::1]:9092").kafka_is_managed
    assert not default_settings(kafka_bootstrap="10.0.0.1:9092,127.0.0.1:9092").kafka_is_managed
