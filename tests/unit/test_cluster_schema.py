"""The cluster form of the migrations (pingan.store.migrate.ClusterSchema) and the local cluster's config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pingan.cluster_services import plan_cluster, render_replica_config
from pingan.errors import ConfigError
from pingan.store.migrate import _CREATE_LEDGER, ClusterSchema, load_migrations, migrate, sharding_key
from tests.support.defaults import default_settings

CREATE = """CREATE TABLE IF NOT EXISTS risk_latest
(
    grid_id  LowCardinality(String),
    score    Float64,
    version  UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(as_of)
ORDER BY (grid_id, version)"""


def test_a_table_becomes_a_replicated_local_table_and_a_distributed_one() -> None:
    assert ClusterSchema("prov", "pingan").statements(CREATE) == [
        """CREATE TABLE IF NOT EXISTS pingan.risk_latest_local ON CLUSTER prov
(
    grid_id  LowCardinality(String),
    score    Float64,
    version  UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pingan/risk_latest_local', '{replica}', version)
PARTITION BY toYYYYMM(as_of)
ORDER BY (grid_id, version)""",
        """CREATE TABLE IF NOT EXISTS pingan.risk_latest ON CLUSTER prov AS pingan.risk_latest_local
ENGINE = Distributed(prov, pingan, risk_latest_local, cityHash64(grid_id))""",
    ]


def test_an_engine_without_arguments_gets_only_the_path_and_replica() -> None:
    create = "CREATE TABLE IF NOT EXISTS t (a String) ENGINE = MergeTree() ORDER BY a"
    local, _ = ClusterSchema("c", "db").statements(create)
    assert local == "CREATE TABLE IF NOT EXISTS db.t_local ON CLUSTER c\n(a String)\n" \
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/t_local', '{replica}') ORDER BY a"  # fmt: skip


def test_add_column_alters_the_local_table_and_recreates_the_distributed_one() -> None:
    schema = ClusterSchema("prov", "pingan")
    schema.statements(CREATE)
    assert schema.statements("ALTER TABLE risk_latest ADD COLUMN live_level LowCardinality(String) DEFAULT ''") == [
        "ALTER TABLE pingan.risk_latest_local ON CLUSTER prov ADD COLUMN live_level LowCardinality(String) DEFAULT ''",
        "DROP TABLE IF EXISTS pingan.risk_latest ON CLUSTER prov",
        "CREATE TABLE IF NOT EXISTS pingan.risk_latest ON CLUSTER prov AS pingan.risk_latest_local\n"
        "ENGINE = Distributed(prov, pingan, risk_latest_local, cityHash64(grid_id))",
    ]


@pytest.mark.parametrize(
    ("order_by", "key"),
    [
        ("(grid_id, event_time, event_id)", "cityHash64(grid_id)"),
        ("(version, grid_id)", "cityHash64(grid_id)"),
        ("(topic, kafka_partition, kafka_offset)", "cityHash64(topic, kafka_partition, kafka_offset)"),
        ("version", "cityHash64(version)"),
    ],
)
def test_rows_with_one_sorting_key_always_go_to_one_shard(order_by: str, key: str) -> None:
    assert sharding_key(order_by) == key


def test_statements_without_a_cluster_form_are_refused() -> None:
    schema = ClusterSchema("c", "db")
    with pytest.raises(ConfigError, match="comes before its CREATE"):
        schema.statements("ALTER TABLE t ADD COLUMN x String")
    with pytest.raises(ConfigError, match="no cluster form"):
        schema.statements("TRUNCATE TABLE t")
    with pytest.raises(ConfigError, match="no sorting key"):
        sharding_key("tuple()")
    with pytest.raises(ConfigError, match="no sorting key"):
        schema.statements("CREATE TABLE IF NOT EXISTS t (a String) ENGINE = MergeTree() ORDER BY tuple()")
    with pytest.raises(ConfigError, match="not a valid ClickHouse identifier"):
        ClusterSchema("c; DROP", "db")


def test_every_shipped_migration_has_a_cluster_form() -> None:
    schema = ClusterSchema("c", "db")
    statements = [s for m in load_migrations() for s in m.statements]
    forms = [form for s in statements for form in schema.statements(s)]
    creates = sum(s.lstrip().upper().startswith("CREATE TABLE") for s in statements)
    added = sum(" ADD COLUMN " in s.upper() for s in statements)
    assert (creates, added) >= (12, 13)  # 12 tables; 0007 adds 4 columns, 0009 nine
    # a Distributed table per table, re-created after each column its local table gains
    assert sum("ENGINE = Distributed(" in f for f in forms) == creates + added
    assert all(" ON CLUSTER c" in f for f in forms)


class RecordingExecutor:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        return [(0,)] if sql.startswith("SELECT count()") else []

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.statements.append(f"INSERT {table}")


def test_without_a_cluster_the_migrations_run_exactly_as_written() -> None:
    executor = RecordingExecutor()
    migrate(executor)
    expected = [_CREATE_LEDGER, "SELECT version FROM schema_migrations"]
    for migration in load_migrations():
        for statement in migration.statements:
            if statement.startswith("ALTER TABLE"):
                expected.append(executor.statements[len(expected)])  # the column check
                assert expected[-1].startswith("SELECT count() FROM system.columns")
            expected.append(statement)
        expected.append("INSERT schema_migrations")
    assert executor.statements == expected


def test_each_replica_names_zookeeper_its_macros_and_the_whole_cluster(tmp_path: Path) -> None:
    cluster = plan_cluster(default_settings(clickhouse_user="default"), tmp_path, name="prov", shards=2, replicas=2)
    assert [(r.shard, r.name) for r in cluster.replicas] == [(1, "s1r1"), (1, "s1r2"), (2, "s2r1"), (2, "s2r2")]
    ports = [cluster.zookeeper_port] + [p for r in cluster.replicas for p in (r.settings.clickhouse_port,
             r.settings.clickhouse_http_port, r.interserver_port)]  # fmt: skip
    assert len(set(ports)) == len(ports)
    config = render_replica_config(cluster, cluster.replicas[2])
    assert "<shard>2</shard>" in config and "<replica>s2r1</replica>" in config
    assert f"<port>{cluster.zookeeper_port}</port>" in config
    assert config.count("<internal_replication>true</internal_replication>") == 2
    assert all(f"<port>{r.settings.clickhouse_port}</port>" in config for r in cluster.replicas)
    assert all(r.settings.clickhouse_cluster == "prov" for r in cluster.replicas)
