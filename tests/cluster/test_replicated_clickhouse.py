"""The cluster schema on real servers: two ClickHouse 18.16 replicas of one shard and ZooKeeper on loopback.

`pingan migrate` with PINGAN_CLICKHOUSE_CLUSTER makes every table a ReplicatedMergeTree `<table>_local` on
each replica plus a Distributed table under the table's own name; what one replica stores, the other
serves; the worker, pointed at one replica, writes through the Distributed tables, and the other replica
holds the same events, windows and risk.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan.grids import GridRegistry
from pingan.schemas.envelope import parse_event
from pingan.settings import Settings
from pingan.store import events, windows
from pingan.store.client import DriverExecutor, connect
from pingan.store.migrate import ClusterSchema, load_migrations, prepare_database
from pingan.topics import ensure_topics
from tests.support.events import call110, mixed_stream
from tests.support.kafka import produce
from tests.support.multi_worker import results
from tests.support.processes import ChildProcess, wait_for

pytestmark = pytest.mark.cluster

TABLES = [
    "alerts", "baseline_cells", "baseline_grids", "baselines", "dead_letters", "events", "grid_units", "grid_windows",
    "published_index", "risk_latest", "risk_updates", "schema_migrations", "unit_risk",
]  # fmt: skip
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _engines(executor: DriverExecutor) -> dict[str, str]:
    rows = executor.query("SELECT name, engine FROM system.tables WHERE database = currentDatabase()")
    return dict(rows)


def _event_rows(count: int, *, ingested_at: datetime) -> list[tuple]:
    rows = []
    for i in range(count):
        document = call110(f"c-{i}", f"G{i % 7:03d}", NOW - timedelta(minutes=i))
        event = parse_event(orjson.dumps(document), now=NOW)
        rows.append(events.row(event, partition=0, offset=i, late=False, ingested_at=ingested_at))
    return rows


def test_migrations_make_replicated_and_distributed_tables_on_every_replica(replicas: list[Settings]) -> None:
    first, second = replicas
    assert prepare_database(first) == [m.version for m in load_migrations()]
    # The other replica got everything through ON CLUSTER, and reads the ledger through its Distributed table.
    assert prepare_database(second) == []
    for settings in replicas:
        executor = connect(settings)
        try:
            engines = _engines(executor)
            assert {name: engines.get(name) for name in TABLES} == dict.fromkeys(TABLES, "Distributed")
            local = {name: engines.get(f"{name}_local", "") for name in TABLES}
            assert all(engine.startswith("Replicated") and engine.endswith("MergeTree") for engine in local.values())
            assert local["events"] == "ReplicatedReplacingMergeTree"
            # 0007's ADD COLUMN reached both the replicated table and the re-created Distributed one.
            for table in ("risk_updates", "risk_updates_local", "risk_latest", "risk_latest_local"):
                columns = {r[0] for r in executor.query(
                    "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(t)s",
                    {"t": table},
                )}  # fmt: skip
                assert {"live_level", "explanation"} <= columns, table
            assert executor.query("SELECT version FROM schema_migrations FINAL ORDER BY version") == [
                (m.version,) for m in load_migrations()
            ]
        finally:
            executor.close()


def test_insert_on_one_replica_is_read_on_the_other(replicas: list[Settings]) -> None:
    first, second = replicas
    prepare_database(first)
    one, other = connect(first), connect(second)
    try:
        rows = _event_rows(40, ingested_at=NOW)
        events.insert(one, rows)
        # A replayed batch (the worker after a crash): same keys, a later version, merged on read with FINAL.
        events.insert(one, _event_rows(10, ingested_at=NOW + timedelta(seconds=5)))
        wait_for(lambda: other.query("SELECT count() FROM events_local")[0][0] == 50, timeout=30,
                 what="the other replica to fetch the parts")  # fmt: skip
        assert events.count_distinct(other) == 40
        assert other.query("SELECT count() FROM events FINAL")[0][0] == 40
        # ...and the other way: written straight into the second replica's local table, served by the first.
        other.insert("grid_windows_local", windows.COLUMNS, [
            ("G001", NOW, 300, 3, 4.5, ["call110"], [3], ["criminal"], [3], 42.0, "yellow", "test", 1),
        ])  # fmt: skip
        wait_for(lambda: one.query("SELECT count() FROM grid_windows_local")[0][0] == 1, timeout=30,
                 what="the first replica to fetch the window")  # fmt: skip
        assert one.query("SELECT grid_id, events, level FROM grid_windows FINAL") == [("G001", 3, "yellow")]
    finally:
        one.close()
        other.close()


async def test_worker_writes_through_the_distributed_tables(replicas: list[Settings], tmp_path) -> None:
    first, second = replicas
    registry = GridRegistry.load(first.grid_registry_path)
    grid_ids = [g.grid_id for g in registry.grids[:30]]
    messages, distinct_valid = mixed_stream(grid_ids, datetime.now(UTC) - timedelta(hours=2), timedelta(hours=2), 4000)
    worker_settings = first.model_copy(
        update={"batch_max_events": 1000, "batch_within_seconds": 0.2, "worker_id": f"w-{first.topic_prefix}"}
    )
    await ensure_topics(worker_settings)
    await produce(worker_settings, worker_settings.topic_events, messages)
    worker = ChildProcess("worker", worker_settings, tmp_path / "worker.log").start()
    one, other = connect(first), connect(second)
    try:

        def replicated() -> bool:
            assert worker.alive, worker.log_tail()
            try:
                return other.query("SELECT uniqExact(event_id) FROM events_local")[0][0] == distinct_valid
            except Exception:  # the worker is still creating the schema
                return False

        wait_for(replicated, timeout=120, what=f"{distinct_valid} events on the other replica")
        # The last batch's windows and risk land just after its events; the replicas agree row for row.
        wait_for(lambda: results(other) == results(one) and results(other)["risk"], timeout=30,
                 what="identical results on both replicas")  # fmt: skip
        result = results(other)
        assert result["events"][0][0] == distinct_valid
        assert result["dead_letters"][0][0] > 0  # the stream's broken records
        on_time = distinct_valid - result["events"][0][1]
        assert sum(row[2] for row in result["windows"]) == on_time
        # Stored on the replica the worker never talked to, in its replicated tables, not only via Distributed.
        assert other.query("SELECT count() FROM grid_windows_local FINAL")[0][0] == len(result["windows"])
    finally:
        worker.stop()
        one.close()
        other.close()


def test_cluster_statements_parse_in_the_current_dialect(tmp_path) -> None:
    """chdb (current ClickHouse, in-process) parses every cluster statement; it cannot run them (no Keeper
    and no remote servers in-process), so this checks the dialect, and the servers above check behaviour."""
    schema = ClusterSchema("pingan", "pingan")
    statements = [form for m in load_migrations() for s in m.statements for form in schema.statements(s)]
    # A process of its own: chdb allows one data path per process, and the compat tests hold theirs.
    script = (
        "import json, sys\n"
        "from chdb.session import Session\n"
        "session = Session(sys.argv[1])\n"
        "out = []\n"
        "for sql in json.load(sys.stdin):\n"
        "    literal = \"'\" + sql.replace('\\\\', '\\\\\\\\').replace(\"'\", \"\\\\'\") + \"'\"\n"
        "    out.append(session.query('SELECT formatQuery(' + literal + ')', 'JSONCompact').bytes().decode())\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "chdb")], input=json.dumps(statements),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    formatted = [json.loads(doc)["data"][0][0] for doc in json.loads(done.stdout)]
    assert len(formatted) == len(statements)
    for original, text in zip(statements, formatted, strict=True):
        assert "ON CLUSTER pingan" in text, original
        if "ReplicatedReplacingMergeTree(" in original:
            assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pingan/" in text
        if "Distributed(" in original:
            assert "ENGINE = Distributed(pingan, pingan, " in text
