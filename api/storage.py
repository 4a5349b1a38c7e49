"""ClickHouse access for the API: one client per worker thread, and the schema applied before first use."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pingan.errors import StorageError
from pingan.settings import Settings
from pingan.store import server
from pingan.store.client import Executor, connect
from pingan.store.migrate import create_database, migrate

log = logging.getLogger(__name__)


class ClosableExecutor(Executor, Protocol):
    def close(self) -> None: ...


class ThreadLocalExecutor:
    """An Executor that runs each call on the calling thread's own client.

    clickhouse-driver clients are not thread-safe, and FastAPI may resolve a dependency on one threadpool
    thread and run the handler on another, so the client is looked up at call time, not handed out.
    """

    def __init__(self, factory: Callable[[], ClosableExecutor]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[ClosableExecutor] = []
        self._closed = False

    def _current(self) -> ClosableExecutor:
        if self._closed:  # a closed driver client would silently reconnect
            raise StorageError("the API is shutting down")
        client: ClosableExecutor | None = getattr(self._local, "client", None)
        if client is None:
            with self._lock:
                if self._closed:
                    raise StorageError("the API is shutting down")
                client = self._factory()
                self._clients.append(client)
            self._local.client = client
        return client

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self._current().query(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._current().insert(table, columns, rows)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # a broken connection must not stop the others from closing
                log.debug("closing a ClickHouse client failed", exc_info=True)


class _SchemaGatedExecutor:
    """Makes sure the schema exists before the first statement (a cheap flag check afterwards)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self._storage.ensure_schema()
        return self._storage.pool.query(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._storage.ensure_schema()
        self._storage.pool.insert(table, columns, rows)


class Storage:
    """The API's ClickHouse: the shared executor, plus the schema applied once before it is used.

    The API starts even when ClickHouse is down (readyz then says so); the first request after it comes
    back applies the migrations. Failed attempts are not repeated more often than ``retry_seconds``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        factory: Callable[[], ClosableExecutor] | None = None,
        server_factory: Callable[[], ClosableExecutor] | None = None,
        retry_seconds: float = 2.0,
    ) -> None:
        self._settings = settings
        self.pool = ThreadLocalExecutor(factory or (lambda: connect(settings)))
        # What handlers get: the schema check happens on first use, so parameter errors and 404s are
        # answered before any ClickHouse round trip.
        self.executor: Executor = _SchemaGatedExecutor(self)
        self._server_factory = server_factory or (lambda: connect(settings, database=""))
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._ready = False
        self._failed_at: float | None = None
        self._failure: StorageError | None = None

    @property
    def schema_ready(self) -> bool:
        return self._ready

    def ensure_schema(self) -> None:
        """Create the database and apply pending migrations, once; raise StorageError while impossible."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            failed_recently = self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_seconds
            if self._failure is not None and failed_recently:
                raise StorageError(str(self._failure))
            try:
                self._migrate()
            except StorageError as exc:
                self._failed_at, self._failure = time.monotonic(), exc
                raise
            self._ready, self._failure = True, None

    def _migrate(self) -> None:
        admin = self._server_factory()
        try:
            create_database(admin, self._settings.clickhouse_database, cluster=self._settings.clickhouse_cluster)
        finally:
            admin.close()
        applied = migrate(self.pool, cluster=self._settings.clickhouse_cluster)
        if applied:
            log.info("applied ClickHouse migrations %s", applied)

    def server_version(self) -> str:
        return server.version(self.pool)

    def close(self) -> None:
        self.pool.close()
