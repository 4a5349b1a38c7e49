"""docs/analysts.md stays true: every example query runs on ClickHouse 18.16 and on current ClickHouse (chdb)
with the same rows, none comes back empty on the sample, the column list matches the migrations, and the
analyst user is read-only with its limits."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chdb.session import Session
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from pingan.publishing import publish
from pingan.settings import Settings
from pingan.store.client import DriverExecutor, Executor
from pingan.store.migrate import migrate
from tests.conftest import clickhouse_client_for
from tests.integration.test_clickhouse_compat import T0, load_sample
from tests.support import small_city
from tests.support.chdb_executor import ChdbExecutor

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
_QUERY = re.compile(r"```sql\n-- query: (\w+)\n(.*?)```", re.S)

# Values for the queries' parameters, within the sample (the small city's two days and the compat sample).
PARAMS: dict[str, Any] = {
    "unit_level": "community",
    "day": small_city.DAY2,
    "start": datetime(2026, 11, 16, tzinfo=UTC),
    "end": datetime(2026, 11, 24, tzinfo=UTC),
    "last_week": datetime(2026, 11, 16, tzinfo=UTC),
    "this_week": datetime(2026, 11, 23, tzinfo=UTC),
    "week_end": datetime(2026, 11, 30, tzinfo=UTC),
    "grid_id": "G1",
    "source": "call110",
}


def documented_queries() -> dict[str, str]:
    return {name: sql.strip() for name, sql in _QUERY.findall(DOC.read_text(encoding="utf-8"))}


def _load(executor: Executor) -> None:
    migrate(executor)
    load_sample(executor)  # risk, windows, alerts, dead letters, baselines, a published day
    small_city.insert_two_days(executor)
    for day in (small_city.DAY1, small_city.DAY2):
        publish(executor, small_city.REGISTRY, small_city.CONFIG, "day", day, now=datetime(2026, 11, 24, tzinfo=UTC))


def _normalised(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # Floats to 6 decimals: the engines may differ in the last bit of a mean.
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def test_docs_list_eight_to_ten_queries() -> None:
    queries = documented_queries()
    assert 8 <= len(queries) <= 10
    assert {"daily_index", "top_grids_week_on_week", "dead_letter_audit", "alert_timeline"} <= set(queries)


def test_every_documented_query_returns_the_same_rows_on_both_engines(
    server_executor: DriverExecutor, chdb_session: Session
) -> None:
    server = server_executor
    chdb = ChdbExecutor(chdb_session, database=f"analysts_{uuid.uuid4().hex[:12]}")
    for executor in (server, chdb):
        _load(executor)
    for name, sql in documented_queries().items():
        params = {key: value for key, value in PARAMS.items() if f"%({key})s" in sql}
        on_server = _normalised(server.query(sql, params))
        on_chdb = _normalised(chdb.query(sql, params))
        assert on_server, f"{name} returned no rows on the sample"
        assert on_server == on_chdb, (name, on_server, on_chdb)


def test_docs_name_every_column_of_every_table(server_executor: DriverExecutor) -> None:
    server = server_executor
    migrate(server)
    text = DOC.read_text(encoding="utf-8")
    rows = server.query(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase() ORDER BY table, name"
    )
    missing = [(table, column) for table, column in rows if f"`{column}`" not in text]
    tables = {table for table, _ in rows}
    assert missing == []
    assert [t for t in sorted(tables) if f"`{t}`" not in text] == []


def test_analyst_is_read_only_with_limits(settings: Settings, clickhouse_client: Client) -> None:
    analyst = clickhouse_client_for(settings, database=settings.clickhouse_database,
                                    user=settings.clickhouse_analyst_user,
                                    password=settings.clickhouse_analyst_password.get_secret_value())  # fmt: skip
    try:
        names = "('readonly', 'max_execution_time', 'max_memory_usage', 'max_result_rows', 'result_overflow_mode')"
        limits = dict(analyst.execute(f"SELECT name, value FROM system.settings WHERE name IN {names}"))
        assert limits == {"readonly": "1", "max_execution_time": "60", "max_memory_usage": "2000000000",
                          "max_result_rows": "1000000", "result_overflow_mode": "throw"}  # fmt: skip
        clickhouse_client.execute("CREATE TABLE big ENGINE = Memory AS SELECT number FROM system.numbers LIMIT 1500000")
        assert analyst.execute("SELECT count() FROM big") == [(1_500_000,)]  # aggregates are fine
        with pytest.raises(ServerException) as too_many:
            analyst.execute("SELECT number FROM big")
        assert too_many.value.code == 396  # TOO_MANY_ROWS_OR_BYTES
        with pytest.raises(ServerException) as refused:
            analyst.execute("SET max_result_rows = 0")
        assert refused.value.code == 164  # READONLY
    finally:
        analyst.disconnect()


def test_sample_days_are_the_small_citys() -> None:
    # The parameters above assume these dates; a change to the sample must show here, not as empty results.
    assert (small_city.DAY1, small_city.DAY2, T0.date()) == (date(2026, 11, 22), date(2026, 11, 23), date(2026, 11, 23))
    assert PARAMS["this_week"] - PARAMS["last_week"] == timedelta(days=7)
