"""Connections to ClickHouse and the small interface the table modules use."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from clickhouse_driver import Client, errors
from clickhouse_driver.errors import Error as DriverError

from pingan.errors import ConfigError, StorageError, StorageRejected, StorageUnavailable
from pingan.settings import Settings

# Server errors a later attempt can get past: timeouts, overload, a replica or ZooKeeper away, a table being
# created by a migration elsewhere. Any other server error on an insert is about its data.
_TRANSIENT_CODES = frozenset({
    errors.ErrorCodes.TIMEOUT_EXCEEDED, errors.ErrorCodes.TOO_MANY_SIMULTANEOUS_QUERIES,
    errors.ErrorCodes.MEMORY_LIMIT_EXCEEDED, errors.ErrorCodes.TOO_MANY_PARTS, errors.ErrorCodes.TABLE_IS_READ_ONLY,
    errors.ErrorCodes.SOCKET_TIMEOUT, errors.ErrorCodes.NETWORK_ERROR, errors.ErrorCodes.UNEXPECTED_END_OF_FILE,
    errors.ErrorCodes.NO_ZOOKEEPER, errors.ErrorCodes.UNKNOWN_TABLE, errors.ErrorCodes.UNKNOWN_DATABASE,
    errors.ErrorCodes.ALL_CONNECTION_TRIES_FAILED, errors.ErrorCodes.ALL_REPLICAS_ARE_STALE,
    errors.ErrorCodes.QUERY_WAS_CANCELLED, 999,  # KEEPER_EXCEPTION
})  # fmt: skip


def classified(exc: BaseException, what: str) -> StorageError:
    """The project's error for a driver failure: unavailable (retry) or rejected (isolate the data)."""
    message = f"{what} failed: {exc}"
    if isinstance(exc, errors.TypeMismatchError):  # the driver could not encode a value for its column
        return StorageRejected(message)
    if isinstance(exc, errors.ServerException) and exc.code not in _TRANSIENT_CODES:
        return StorageRejected(message)
    return StorageUnavailable(message)


T = TypeVar("T")

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
            raise classified(exc, "ClickHouse query") from exc

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        sql = f"INSERT INTO {checked_identifier(table)} ({', '.join(columns)}) VALUES"
        try:
            # Columns, not rows: the driver then writes each column straight from its list instead of reading
            # every row once per column (zip transposes in C).
            self.client.execute(sql, list(zip(*rows, strict=True)), columnar=True)
        except (DriverError, OSError, EOFError) as exc:
            raise classified(exc, f"ClickHouse insert into {table}") from exc

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


def insert_isolating(
    executor: Executor, table: str, columns: Sequence[str], items: Sequence[T], to_row: Callable[[T], Sequence[Any]]
) -> list[tuple[T, StorageRejected]]:
    """Insert the items' rows; when ClickHouse rejects their data, insert the rest and return the rejected items.

    Bisects: a batch with one bad row among n costs about 2 log2(n) more inserts, and every good row is stored.
    StorageUnavailable propagates (the whole write is retried). An insert is one block, so a rejected one stored
    nothing; rows are keyed (ReplacingMergeTree), so a retried write stores each row once anyway.
    """
    rows = [to_row(item) for item in items]
    rejected: list[tuple[int, StorageRejected]] = []
    pending = [(0, len(rows))]
    while pending:
        start, end = pending.pop()
        try:
            executor.insert(table, columns, rows[start:end])
        except StorageRejected as exc:
            if end - start == 1:
                rejected.append((start, exc))
            else:
                middle = (start + end) // 2
                pending += [(middle, end), (start, middle)]
    return [(items[index], exc) for index, exc in sorted(rejected, key=lambda item: item[0])]


Rejected = list[tuple[Any, StorageRejected]]
