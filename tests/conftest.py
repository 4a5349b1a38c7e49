"""Shared fixtures: one broker and one ClickHouse per test session, on random loopback ports.

They are started by ``pingan.services.running_services``, the code behind ``pingan services up``, only when
a test asks for them (integration tests), and stopped at the end of the session. Each test gets its own
topic prefix and ClickHouse database, so tests never see each other's data.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest
from clickhouse_driver import Client

from pingan.grids import GridRegistry
from pingan.services import free_loopback_ports, running_services
from pingan.settings import Settings
from pingan.store.client import connect
from tests.support.defaults import default_settings, shipped_registry

log = logging.getLogger(__name__)


def clickhouse_client_for(settings: Settings, *, database: str = "", user: str | None = None,
                          password: str | None = None) -> Client:  # fmt: skip
    """A clickhouse-driver client to the settings' server (the store's own connect); the caller disconnects it.
    Tests use the client itself: they assert ClickHouse's own error codes, which the store's errors wrap."""
    return connect(settings, database=database, user=user, password=password).client


@pytest.fixture(scope="session", autouse=True)
def _no_pingan_environment() -> Iterator[None]:
    """Nothing in the suite sees the developer's ``PINGAN_*`` (a CLI's main, the evaluation and the processes
    the tests start build their Settings from the environment): only what a test sets itself."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("PINGAN_")]:
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def registry() -> GridRegistry:
    """The demo district (deploy/data/grids.json), loaded once for the session; nothing mutates it."""
    return shipped_registry()


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a broker and a ClickHouse started for this session (stopped at its end)."""
    kafka_port, clickhouse_port, clickhouse_http_port = free_loopback_ports(3)
    session_id = uuid.uuid4().hex[:8]
    settings = default_settings(
        data_dir=tmp_path_factory.mktemp("services"),
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        kafka_managed=True,
        clickhouse_host="127.0.0.1",
        clickhouse_port=clickhouse_port,
        clickhouse_http_port=clickhouse_http_port,
        clickhouse_managed=True,
        clickhouse_user="default",
        clickhouse_password="",
        clickhouse_database=f"pingan_s{session_id}",
        topic_prefix=f"s{session_id}.",
    )
    with running_services(settings):
        yield settings


@pytest.fixture
def settings(services: Settings) -> Iterator[Settings]:
    """The session's services with a topic prefix and a ClickHouse database of this test's own.

    The database is not created here (the code under test usually does that). Afterwards it is dropped, with
    any other database whose name starts with it (a test's second database, e.g. ``<name>_steady``).
    """
    test_id = uuid.uuid4().hex[:12]
    database = f"pingan_t{test_id}"
    yield services.model_copy(update={"topic_prefix": f"t{test_id}.", "clickhouse_database": database})
    client = clickhouse_client_for(services)
    try:
        query = "SELECT name FROM system.databases WHERE startsWith(name, %(prefix)s)"
        rows = client.execute(query, {"prefix": database})
        for (name,) in rows:
            client.execute(f"DROP DATABASE IF EXISTS {name}")
    except Exception as exc:  # cleanup only: a leftover database must not fail a test that passed
        log.warning("could not drop the databases of %s: %s", database, exc)
    finally:
        client.disconnect()


@pytest.fixture
def clickhouse_client(settings: Settings) -> Iterator[Client]:
    """A client (as the writer user) whose current database is this test's, created for it."""
    admin = clickhouse_client_for(settings)
    try:
        admin.execute(f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse_database}")
    finally:
        admin.disconnect()
    client = clickhouse_client_for(settings, database=settings.clickhouse_database)
    yield client
    client.disconnect()
