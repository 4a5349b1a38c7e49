"""The one settings object. Every value can be set by an environment variable ``PINGAN_<NAME>``.

Build it once at an entry point (``Settings()``) and pass it down; nothing reads the environment elsewhere.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def is_loopback(host: str) -> bool:
    """Whether a host name or address (IPv6 with or without brackets) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PINGAN_", env_file=None, extra="ignore", frozen=True)

    # --- where local state lives (service data, pid files, logs) ---
    data_dir: Path = REPO_ROOT / ".pingan"

    # --- Kafka ---
    kafka_bootstrap: str = "127.0.0.1:19092"
    # None = decide from the address: a loopback broker is started and stopped by `pingan services`,
    # anything else is external and never touched.
    kafka_managed: bool | None = None
    # None = on for external brokers (real Kafka), off for the managed Tansu broker, which rejects
    # InitProducerId.
    kafka_idempotence: bool | None = None
    topic_prefix: str = "pingan."
    topic_partitions: int = Field(default=4, ge=1)
    # Replication for topics we create; 1 locally, 3 on a real cluster.
    topic_replication: int = Field(default=1, ge=1)

    # --- ClickHouse ---
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000  # native protocol
    clickhouse_http_port: int = 18123
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_database: str = "pingan"
    clickhouse_managed: bool | None = None
    clickhouse_analyst_user: str = "analyst"
    clickhouse_analyst_password: SecretStr = SecretStr("analyst")
    # A cluster of the servers' remote_servers: when set, migrations create the replicated schema (each table
    # a ReplicatedMergeTree `<table>_local` on every replica plus a Distributed table under its own name,
    # docs/scaling.md). "" = one server, plain MergeTree tables.
    clickhouse_cluster: str = Field(default="", pattern=r"^([A-Za-z_][A-Za-z0-9_]{0,63})?$")

    # --- API ---
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # How often the API checks ClickHouse for a changed map (api/snapshot.py); polls are served from memory
    # in between. 0 = check on every request (tests that write and read at once). 0.5 s: a map change shows within
    # 2 s at the 99th percentile at half the worker's rate (make bench); 1 s measured 2.6 s.
    api_cache_seconds: float = Field(default=0.5, ge=0)
    # Origins allowed to call the API from a browser (CORS), comma-separated, e.g.
    # "https://screen.example.org,http://10.0.0.5:8080"; "*" allows any; empty allows none.
    cors_origins: str = ""
    # Reads without an API key (the local demo). None = on only when the API listens on loopback; the API
    # refuses to start with it on for any other address (docs/api.md, "Who may read what").
    api_open_read: bool | None = None

    # --- incidents (alert lifecycle, docs/api.md "Incidents") ---
    # Seconds an incident may wait for acknowledgement at one centre before it passes up a level
    # (community -> subdistrict -> district), per alert level; each level restarts the time.
    incident_red_ack_seconds: float = Field(default=300.0, gt=0)
    incident_orange_ack_seconds: float = Field(default=900.0, gt=0)
    # How often the API writes the alerts of escalations that came due (idempotent: same rows each time);
    # 0 = never (an API replica that only reads, or a test comparing stored rows).
    incident_check_seconds: float = Field(default=1.0, ge=0)

    # --- ingest gateway (POST /v1/ingest/{source}, docs/ingest.md) ---
    # SHA-256 hashes of producers' API keys and the sources each may send; the shipped file holds the local
    # demo key only, so production points this at a file of its own.
    ingest_keys_path: Path = REPO_ROOT / "deploy" / "config" / "ingest-keys.toml"
    ingest_max_batch: int = Field(default=500, ge=1)
    ingest_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Requests being read, validated or delivered at once; beyond it the gateway answers 429. Together with
    # the body limit it bounds the gateway's memory: at most max_in_flight × max_body_bytes of requests.
    ingest_max_in_flight: int = Field(default=64, ge=1)
    # How long a request waits for the broker's acks before answering 503.
    ingest_delivery_timeout_seconds: float = Field(default=10.0, gt=0)

    # --- worker ---
    worker_id: str = "pingan-worker"
    worker_web_port: int = 6066
    batch_max_events: int = Field(default=5000, ge=1)  # records per batch the worker takes from Faust
    # ... processed and written in rounds of at most this many bytes of records per partition: a batch of event
    # batch records (schemas/batch.py) holds far more events than records.
    batch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    # The project's producers (simulator, gateway) put up to this many events for one partition's grids in one
    # Kafka record (schemas/batch.py): the stream framework's cost is per record. 1: one event per record.
    producer_batch_events: int = Field(default=100, ge=1)  # at most pingan.schemas.batch.MAX_BATCH_EVENTS are used
    # How long a worker batch waits to fill: about 1/this inserts per second into each ClickHouse table from one
    # worker at low rates (a busy worker's batches fill first). 0.2 s with api_cache_seconds 0.5: p99 1.7 s from
    # production to the map at half the worker's rate (make bench); 0.5 s with 1 s: 2.6 s.
    batch_within_seconds: float = Field(default=0.2, gt=0)
    window_seconds: int = Field(default=300, ge=1)  # tumbling window (the bucket)
    hop_window_seconds: int = Field(default=3600, ge=1)  # hopping window, advances one bucket at a time
    allowed_lateness_seconds: int = Field(default=120, ge=0)
    # Risk updates and alerts are decided at the end of each step of event time; the map shows provisional
    # values in between. Must divide window_seconds and allowed_lateness_seconds.
    score_step_seconds: int = Field(default=10, ge=1)
    # A partition with risk waiting for its step to end and no records for this long gets a heartbeat record
    # (event time = the worker's clock), so its escalations are not held back until its next event. 0: never.
    heartbeat_seconds: float = Field(default=5.0, ge=0)
    max_future_seconds: int = Field(default=300, ge=0)
    max_event_bytes: int = Field(default=64 * 1024, ge=1024)
    progress_log_seconds: float = Field(default=30.0, gt=0)
    # How long the worker waits at start-up for ClickHouse to answer before giving up.
    startup_wait_seconds: float = Field(default=60.0, ge=0)
    # Which learned baseline the worker scores against: "" the newest snapshot, "prior" none (type and
    # population priors only), anything else that exact version (`pingan baselines list`).
    baseline_version: str = ""
    # Weeks of history `pingan baselines learn` reads by default.
    baseline_history_weeks: int = Field(default=4, ge=1, le=104)

    # --- config files shipped with the repo ---
    risk_config_path: Path = REPO_ROOT / "deploy" / "config" / "risk-index.toml"
    grid_registry_path: Path = REPO_ROOT / "deploy" / "data" / "grids.json"
    # Weights, periods, score and flag rules of the published index (`pingan publish`, docs/risk-index.md).
    published_index_config_path: Path = REPO_ROOT / "deploy" / "config" / "published-index.toml"
    # Feeds: per-source topic, category -> (type, severity) table, index weights for plugin feeds.
    feeds_config_path: Path = REPO_ROOT / "deploy" / "config" / "feeds.toml"

    # --- producers ---
    # Key of the keyed hash that pseudonymises plates, phone numbers and person ids at the edge.
    pseudonym_key: SecretStr = SecretStr("pingan-local-demo-key-change-me")
    simulate_rate: float = Field(default=1.0, gt=0)  # multiplier on the simulated city's event rates

    @model_validator(mode="after")
    def _windows_fit(self) -> Settings:
        if self.window_seconds % self.score_step_seconds or self.allowed_lateness_seconds % self.score_step_seconds:
            raise ValueError("score_step_seconds must divide window_seconds and allowed_lateness_seconds")
        if self.hop_window_seconds % self.window_seconds:
            raise ValueError("hop_window_seconds must be a whole number of window_seconds")
        return self

    @property
    def kafka_is_managed(self) -> bool:
        if self.kafka_managed is not None:
            return self.kafka_managed
        return all(is_loopback(hostport.rsplit(":", 1)[0]) for hostport in self.kafka_bootstrap.split(","))

    @property
    def clickhouse_is_managed(self) -> bool:
        if self.clickhouse_managed is not None:
            return self.clickhouse_managed
        return is_loopback(self.clickhouse_host)

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def api_on_loopback(self) -> bool:
        return is_loopback(self.api_host)

    @property
    def open_read(self) -> bool:
        if self.api_open_read is not None:
            return self.api_open_read
        return self.api_on_loopback

    @property
    def idempotent_producer(self) -> bool:
        if self.kafka_idempotence is not None:
            return self.kafka_idempotence
        return not self.kafka_is_managed

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    # --- topic names, all derived from the prefix so a test can own a private set ---
    @property
    def topic_events(self) -> str:
        return f"{self.topic_prefix}events"

    @property
    def topic_dead_letters(self) -> str:
        return f"{self.topic_prefix}dead-letters"

    @property
    def topic_late(self) -> str:
        return f"{self.topic_prefix}events-late"

    @property
    def topic_risk(self) -> str:
        return f"{self.topic_prefix}risk"

    @property
    def topic_alerts(self) -> str:
        return f"{self.topic_prefix}alerts"

    @property
    def topic_alert_actions(self) -> str:
        return f"{self.topic_prefix}alert-actions"

    def as_env(self) -> dict[str, str]:
        """These settings as PINGAN_* variables, so a child process (worker, API) gets exactly them."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"PINGAN_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env
