"""Connections to ClickHouse and the small interface the table modules use."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as DriverError

from pingan.errors import ConfigError, StorageError
from pingan.settings import Settings

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def checked_identifier(name: str) -> str:
    """A database or table name that is safe to place in SQL (identifiers cannot be parameters)."""
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"{name!r} is not a valid ClickHouse identifier")
    return name


class Executor(Protocol):
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a statement with ``%(name)s`` parameters and return its rows."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows, passed as data (never written into the SQL text)."""
        ...


class DriverExecutor:
    """An Executor over one clickhouse-driver Client. Not thread-safe: one per thread."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self.client.execute(sql, params or {})
        except (DriverError, OSError, EOFError) as exc:
            raise StorageError(f"ClickHouse query failed: {exc}") from exc

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        sql = f"INSERT INTO {checked_identifier(table)} ({', '.join(columns)}) VALUES"
        try:
            self.client.execute(sql, rows)
        except (DriverError, OSError, EOFError) as exc:
            raise StorageError(f"ClickHouse insert into {table} failed: {exc}") from exc

    def close(self) -> None:
        self.client.disconnect()


def connect(settings: Settings, *, database: str | None = None, user: str | None = None,
            password: str | None = None) -> DriverExecutor:  # fmt: skip
    """A new client; ``database=""`` connects without selecting one (used before it exists)."""
    client = Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        user=user or settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value() if password is None else password,
        database=settings.clickhouse_database if database is None else database,
        connect_timeout=5,
        send_receive_timeout=60,
    )
    return DriverExecutor(client)
