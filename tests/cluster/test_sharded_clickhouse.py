"""The cluster schema over two shards (one replica each): rows are spread by grid, every server reads them all.

The replicated tests (test_replicated_clickhouse.py) run one shard of two replicas; this one checks the
other half of the Distributed tables: the sharding key. A grid's rows all land on one shard (so a
ReplacingMergeTree merges a replayed row with its original), both shards get some, and a query through the
Distributed table on either server sees every row exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan.cluster_services import LocalCluster, plan_cluster, running_cluster
from pingan.schemas.envelope import parse_event
from pingan.settings import Settings
from pingan.store import events
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from tests.support.events import call110

pytestmark = pytest.mark.cluster

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
GRIDS = [f"G{i:03d}" for i in range(12)]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    database = f"pingan_s{uuid.uuid4().hex[:8]}"
    base = Settings(clickhouse_user="default", clickhouse_password="", clickhouse_database=database)
    cluster = plan_cluster(base, tmp_path_factory.mktemp("sharded"), name="pingan", shards=2, replicas=1)
    with running_cluster(cluster):
        yield cluster


def _rows(count: int, *, ingested_at: datetime) -> list[tuple]:
    rows = []
    for i in range(count):
        document = call110(f"s-{i}", GRIDS[i % len(GRIDS)], NOW - timedelta(minutes=i))
        event = parse_event(orjson.dumps(document), now=NOW)
        rows.append(events.row(event, partition=0, offset=i, late=False, ingested_at=ingested_at))
    return rows


def test_rows_are_sharded_by_grid_and_read_whole_from_any_server(sharded: LocalCluster) -> None:
    first, second = (replica.settings for replica in sharded.replicas)
    assert [r.shard for r in sharded.replicas] == [1, 2]
    prepare_database(first)
    executors = [connect(first), connect(second)]
    try:
        events.insert(executors[0], _rows(60, ingested_at=NOW))
        # A replay of the first 20 (a later version of the same keys) must meet its originals on their shard.
        events.insert(executors[0], _rows(20, ingested_at=NOW + timedelta(seconds=5)))
        local = [dict(e.query("SELECT grid_id, count() FROM events_local GROUP BY grid_id")) for e in executors]
        assert all(local), f"a shard got nothing: {local}"
        assert not set(local[0]) & set(local[1]), "a grid's rows are on both shards"
        assert set(local[0]) | set(local[1]) == set(GRIDS)
        assert sum(local[0].values()) + sum(local[1].values()) == 80
        for executor in executors:
            assert events.count_distinct(executor) == 60
            assert executor.query("SELECT count() FROM events FINAL")[0][0] == 60
    finally:
        for executor in executors:
            executor.close()
