"""Fixtures of the real-service tests: the worker and the API as child processes, and executors on both
ClickHouse engines (the 18.16 server and chdb)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chdb.session import Session

from pingan.settings import Settings
from pingan.store.client import DriverExecutor, connect
from pingan.store.migrate import create_database
from tests.support.processes import ChildProcess, free_port, wait_for


@pytest.fixture
def pipeline_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"api_port": free_port(), "batch_within_seconds": 0.2, "worker_id": f"w-{settings.topic_prefix}"}
    )


@pytest.fixture
def worker(pipeline_settings: Settings, tmp_path: Path) -> Iterator[ChildProcess]:
    child = ChildProcess("worker", pipeline_settings, tmp_path / "worker.log").start()
    yield child
    child.stop()


@pytest.fixture
def api(pipeline_settings: Settings, tmp_path: Path) -> Iterator[str]:
    child = ChildProcess("api", pipeline_settings, tmp_path / "api.log").start()
    base = f"http://127.0.0.1:{pipeline_settings.api_port}"

    def healthy() -> bool:
        assert child.alive, child.log_tail()
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=30, what="the API to answer")
    yield base
    child.stop()


@pytest.fixture(scope="session")
def chdb_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    # chdb allows one data path per process, so the whole test session shares this one (every module that
    # checks SQL on the current engine uses it: a second path in the same process fails to open).
    session = Session(str(tmp_path_factory.mktemp("chdb") / "data"))
    yield session
    session.close()


@pytest.fixture
def server_executor(settings: Settings) -> Iterator[DriverExecutor]:
    """An executor on the 18.16 server, in this test's database (created, not migrated)."""
    admin = connect(settings, database="")
    try:
        create_database(admin, settings.clickhouse_database)
    finally:
        admin.close()
    executor = connect(settings)
    yield executor
    executor.close()
