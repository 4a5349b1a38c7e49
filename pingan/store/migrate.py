"""Versioned, idempotent schema migrations from deploy/clickhouse/migrations/NNNN_name.sql.

Each file is applied once, in order, and recorded in ``schema_migrations``. The statements themselves are
``IF NOT EXISTS``, so two processes migrating at the same start-up (worker and API) are harmless.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pingan.errors import StorageError
from pingan.settings import REPO_ROOT, Settings
from pingan.store.client import Executor, checked_identifier, connect

log = logging.getLogger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "deploy" / "clickhouse" / "migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# "column already exists": DUPLICATE_COLUMN (15) on current ClickHouse, ILLEGAL_COLUMN (44) on 18.16.
_DUPLICATE_COLUMN_CODES = frozenset({15, 44})
_ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)\s", re.IGNORECASE)

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


def create_database(server: Executor, database: str) -> None:
    server.query(f"CREATE DATABASE IF NOT EXISTS {checked_identifier(database)}")


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


def migrate(executor: Executor, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations to the executor's database; return the versions applied now."""
    executor.query(_CREATE_LEDGER)
    done = {row[0] for row in executor.query("SELECT version FROM schema_migrations")}
    applied = []
    for migration in load_migrations(directory):
        if migration.version in done:
            continue
        for statement in migration.statements:
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


def prepare_database(settings: Settings) -> list[int]:
    """Create the database and apply pending migrations (both idempotent); what every entry point runs first."""
    server = connect(settings, database="")
    try:
        create_database(server, settings.clickhouse_database)
    finally:
        server.close()
    executor = connect(settings)
    try:
        applied = migrate(executor)
    finally:
        executor.close()
    if applied:
        log.info("applied ClickHouse migrations %s", applied)
    return applied
