"""Fixtures of the replicated-ClickHouse tests (`make test-cluster`): ZooKeeper and two ClickHouse 18.16
replicas of one shard on loopback (pingan/cluster_services.py), plus a broker for the worker test.

Started once per session; each test gets a database and a topic prefix of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pingan.cluster_services import LocalCluster, plan_cluster, running_cluster
from pingan.services import free_loopback_ports, running_services
from pingan.settings import Settings


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("cluster")
    (kafka_port,) = free_loopback_ports(1)
    base = Settings(
        data_dir=root / "broker",
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        kafka_managed=True,
        clickhouse_user="default",
        clickhouse_password="",
    )
    cluster = plan_cluster(base, root, name="pingan", shards=1, replicas=2)
    # The broker only: ClickHouse (replica 1) is external to `running_services`, which just probes it.
    broker = cluster.replicas[0].settings.model_copy(update={"data_dir": root / "broker"})
    with running_cluster(cluster), running_services(broker):
        yield cluster


@pytest.fixture
def replicas(local_cluster: LocalCluster) -> list[Settings]:
    """Settings for each replica, sharing this test's own database name and topic prefix."""
    test_id = uuid.uuid4().hex[:12]
    return [
        replica.settings.model_copy(
            update={"clickhouse_database": f"pingan_c{test_id}", "topic_prefix": f"c{test_id}."}
        )
        for replica in local_cluster.replicas
    ]
