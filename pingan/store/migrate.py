"""Versioned, idempotent schema migrations from deploy/clickhouse/migrations/NNNN_name.sql.

Each file is applied once, in order, and recorded in ``schema_migrations``. The statements themselves are
``IF NOT EXISTS``, so two processes migrating at the same start-up (worker and API) are harmless.

The same files make the cluster schema when ``clickhouse_cluster`` names a cluster of the servers'
``remote_servers`` (``ClusterSchema``, docs/scaling.md): each table becomes ``<table>_local``, a
``Replicated*MergeTree`` created ``ON CLUSTER`` on every replica, plus a ``Distributed`` table under the
table's own name, so every query and insert of the application runs unchanged against any replica.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from pingan.errors import ConfigError, StorageError
from pingan.settings import REPO_ROOT, Settings
from pingan.store.client import Executor, checked_identifier, connect

log = logging.getLogger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "deploy" / "clickhouse" / "migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# "column already exists": DUPLICATE_COLUMN (15) on current ClickHouse, ILLEGAL_COLUMN (44) on 18.16.
_DUPLICATE_COLUMN_CODES = frozenset({15, 44})
_ADD_COLUMN = re.compile(
    r"^ALTER\s+TABLE\s+(?:\w+\.)?(\w+)(?:\s+ON\s+CLUSTER\s+\w+)?\s+ADD\s+COLUMN\s+(\w+)\s", re.IGNORECASE
)
_CREATE_TABLE = re.compile(
    r"^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(?P<table>\w+)\s*(?P<columns>\(.*\))\s*"
    r"ENGINE\s*=\s*(?P<engine>\w*MergeTree)\s*\((?P<args>[^)]*)\)(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_ORDER_BY = re.compile(r"\bORDER\s+BY\s+(?P<key>\([^)]*\)|\w+(?:\(\))?)", re.IGNORECASE)
# Where each replicated table keeps its replication log in ZooKeeper / ClickHouse Keeper. {shard} and
# {replica} are the servers' macros (deploy/clickhouse/cluster/); the database is written in, because
# 18.16 expands no {database}/{table} macros, and two databases must never share a log.
REPLICATION_PATH = "/clickhouse/tables/{shard}/%(database)s/%(table)s"
LOCAL_SUFFIX = "_local"
# The column that keeps one grid's rows on one shard, when a table's key has it.
_GRID_COLUMN = "grid_id"

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(sql: str) -> tuple[str, ...]:
    """Split a file on ``;`` at line ends, dropping comment-only lines (no string literal holds one)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    chunks = "\n".join(lines).split(";\n")
    return tuple(chunk.strip().rstrip(";").strip() for chunk in chunks if chunk.strip().rstrip(";").strip())


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} must be named NNNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], split_statements(path.read_text())))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return migrations


def create_database(server: Executor, database: str, *, cluster: str = "") -> None:
    on_cluster = f" ON CLUSTER {checked_identifier(cluster)}" if cluster else ""
    server.query(f"CREATE DATABASE IF NOT EXISTS {checked_identifier(database)}{on_cluster}")


def sharding_key(order_by: str) -> str:
    """The Distributed table's sharding expression for a table ordered by ``order_by``.

    Rows with the same sorting key must land on the same shard, or a ReplacingMergeTree could never merge a
    replayed row with its original: the key is therefore a hash of sorting-key columns only. With a grid in
    the key, the grid alone (a grid's events, windows and risk live together); otherwise the whole key.
    """
    if order_by.strip() == "tuple()":
        raise ConfigError("no sorting key to shard by in ORDER BY tuple()")
    columns = [c.strip() for c in order_by.strip().removeprefix("(").removesuffix(")").split(",") if c.strip()]
    if not columns:
        raise ConfigError(f"no sorting key to shard by in ORDER BY {order_by!r}")
    if _GRID_COLUMN in columns:
        return f"cityHash64({_GRID_COLUMN})"
    return f"cityHash64({', '.join(columns)})"


@dataclass
class ClusterSchema:
    """The cluster form of the migrations, statement by statement, in file order.

    - ``CREATE TABLE IF NOT EXISTS t (...) ENGINE = XMergeTree(args) ...`` becomes ``t_local``, created
      ``ON CLUSTER`` with ``ReplicatedXMergeTree('<path>', '{replica}', args)`` and the same columns, partitions
      and key, then ``t`` as ``Distributed(cluster, database, t_local, <sharding key>)``;
    - ``ALTER TABLE t ADD COLUMN ...`` alters ``t_local`` ``ON CLUSTER`` (replication carries it to every
      replica), then drops and re-creates the Distributed ``t`` from it: 18.16 refuses an ON CLUSTER ALTER
      of a non-replicated table on a cluster with internal replication, and a Distributed table holds no
      data (inserts are synchronous, ``check_cluster_settings``).

    Anything else has no known cluster form and is refused rather than run on one server only. The sharding
    key of each table is learnt from its CREATE, so every statement must pass through, applied or not.
    """

    cluster: str
    database: str
    sharding_keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked_identifier(self.cluster)
        checked_identifier(self.database)

    def _distributed(self, table: str) -> str:
        db, local = self.database, f"{table}{LOCAL_SUFFIX}"
        return (
            f"CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {self.cluster} AS {db}.{local}\n"
            f"ENGINE = Distributed({self.cluster}, {db}, {local}, {self.sharding_keys[table]})"
        )

    def statements(self, statement: str) -> list[str]:
        db, on_cluster = self.database, f"ON CLUSTER {self.cluster}"
        created = _CREATE_TABLE.match(statement.strip())
        if created is not None:
            table = created["table"]
            local = f"{table}{LOCAL_SUFFIX}"
            order_by = _ORDER_BY.search(created["rest"])
            if order_by is None:
                raise ConfigError(f"CREATE TABLE {table} has no ORDER BY: cannot choose its sharding key")
            self.sharding_keys[table] = sharding_key(order_by["key"])
            path = REPLICATION_PATH % {"database": db, "table": local}
            args = ", ".join(part for part in (f"'{path}'", "'{replica}'", created["args"].strip()) if part)
            return [
                f"CREATE TABLE IF NOT EXISTS {db}.{local} {on_cluster}\n{created['columns']}\n"
                f"ENGINE = Replicated{created['engine']}({args}){created['rest']}",
                self._distributed(table),
            ]
        added = _ADD_COLUMN.match(statement.strip())
        if added is not None:
            table, definition = added[1], statement.strip()[added.end(1) :].lstrip()
            if table not in self.sharding_keys:
                raise ConfigError(f"ALTER TABLE {table} comes before its CREATE TABLE in the migrations")
            return [
                f"ALTER TABLE {db}.{table}{LOCAL_SUFFIX} {on_cluster} {definition}",
                f"DROP TABLE IF EXISTS {db}.{table} {on_cluster}",
                self._distributed(table),
            ]
        raise ConfigError(f"no cluster form for this migration statement (only CREATE TABLE, ADD COLUMN): {statement}")


def _column_exists(executor: Executor, statement: str) -> bool:
    """True for an ADD COLUMN whose column is there already (18.16 has no ADD COLUMN IF NOT EXISTS, and the
    worker and the API may migrate at the same moment)."""
    match = _ADD_COLUMN.match(statement)
    if match is None:
        return False
    rows = executor.query(
        "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = %(table)s "
        "AND name = %(column)s",
        {"table": match[1], "column": match[2]},
    )
    return bool(rows) and rows[0][0] > 0


def migrate(executor: Executor, directory: Path = MIGRATIONS_DIR, *, cluster: str = "") -> list[int]:
    """Apply pending migrations to the executor's database; return the versions applied now.

    With ``cluster``, every statement runs in its cluster form (``ClusterSchema``) on every replica.
    """
    schema = ClusterSchema(cluster, str(executor.query("SELECT currentDatabase()")[0][0])) if cluster else None

    def forms(statement: str) -> list[str]:
        return schema.statements(statement) if schema is not None else [statement]

    for statement in forms(_CREATE_LEDGER):
        executor.query(statement)
    done = {row[0] for row in executor.query("SELECT version FROM schema_migrations")}
    applied = []
    for migration in load_migrations(directory):
        statements = [form for original in migration.statements for form in forms(original)]
        if migration.version in done:
            continue
        for statement in statements:
            if _column_exists(executor, statement):
                continue
            try:
                executor.query(statement)
            except StorageError as exc:
                # Another process added the column between our check and our ALTER: the outcome we wanted.
                code = getattr(exc.__cause__, "code", None)
                if not (_ADD_COLUMN.match(statement) and code in _DUPLICATE_COLUMN_CODES and "exists" in str(exc)):
                    raise
        executor.insert("schema_migrations", ["version", "name"], [(migration.version, migration.name)])
        log.info("applied migration %04d_%s", migration.version, migration.name)
        applied.append(migration.version)
    return applied


def check_cluster_settings(executor: Executor) -> None:
    """Refuse a replicated schema whose Distributed inserts would be acknowledged before they are stored.

    The worker acknowledges a batch once ClickHouse accepted its rows; an asynchronous Distributed insert
    (the server default) only queues them on the receiving server's disk, so the server profile must set
    ``insert_distributed_sync = 1`` (deploy/clickhouse/cluster/users.d/).
    """
    rows = executor.query("SELECT value FROM system.settings WHERE name = 'insert_distributed_sync'")
    if not rows or str(rows[0][0]) != "1":
        raise ConfigError(
            "clickhouse_cluster is set but the user's profile has insert_distributed_sync = "
            f"{rows[0][0] if rows else 'unknown'}: set it to 1 in the servers' users.xml (deploy/clickhouse/cluster/)"
        )


def prepare_database(settings: Settings) -> list[int]:
    """Create the database and apply pending migrations (both idempotent); what every entry point runs first."""
    cluster = settings.clickhouse_cluster
    server = connect(settings, database="")
    try:
        if cluster:
            check_cluster_settings(server)
        create_database(server, settings.clickhouse_database, cluster=cluster)
    finally:
        server.close()
    executor = connect(settings)
    try:
        applied = migrate(executor, cluster=cluster)
    finally:
        executor.close()
    if applied:
        log.info("applied ClickHouse migrations %s", applied)
    return applied
