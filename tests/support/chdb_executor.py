"""An Executor over chdb (the current ClickHouse engine, in-process), for checking SQL on both versions.

Statements get their ``%(name)s`` parameters substituted exactly as clickhouse-driver does (same escaping
function), results come back as JSONCompact and are converted to the Python types clickhouse-driver
returns, so a store function's output can be compared value for value across engines. Inserts go as
``FORMAT JSONEachRow`` data, never as values written into the SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from chdb.session import Session
from clickhouse_driver.util.escape import escape_params

from pingan.errors import StorageError
from pingan.store.client import checked_identifier

_INTEGER = re.compile(r"^U?Int(8|16|32|64|128|256)$")


def _split_top_level(inner: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in inner:
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += char == "("
        depth -= char == ")"
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def converter(type_name: str) -> Callable[[Any], Any]:
    """A function turning a JSONCompact value of ``type_name`` into what clickhouse-driver would return."""
    type_name = type_name.strip()
    if type_name.startswith("LowCardinality(") or type_name.startswith("Nullable("):
        inner = converter(type_name[type_name.index("(") + 1 : -1])
        return lambda v: None if v is None else inner(v)
    if type_name.startswith("Array("):
        item = converter(type_name[len("Array(") : -1])
        return lambda v: [item(x) for x in v]
    if type_name.startswith("Tuple("):
        items = [converter(t.split(" ", 1)[-1] if " " in t else t) for t in _split_top_level(type_name[6:-1])]
        return lambda v: tuple(f(x) for f, x in zip(items, v, strict=True))
    if _INTEGER.match(type_name):
        return int  # 64-bit integers may arrive quoted
    if type_name.startswith("Float"):
        return float
    if type_name.startswith("Decimal"):
        return lambda v: Decimal(str(v))
    if type_name.startswith("DateTime("):
        zone = ZoneInfo(type_name[len("DateTime(") : -1].strip("'"))
        return lambda v: datetime.strptime(v, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    if type_name == "DateTime":
        return lambda v: datetime.strptime(v, "%Y-%m-%d %H:%M:%S")  # naive, like the driver
    if type_name == "Date":
        return lambda v: date.fromisoformat(v)
    return lambda v: v  # String, FixedString, Enum, UUID (as text)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # Aware datetimes as epoch seconds: unambiguous whatever the column's or session's time zone.
        return int(value.timestamp()) if value.tzinfo is not None else value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


class ChdbExecutor:
    """Runs statements in one database of a chdb session (one session per process: chdb locks its path)."""

    def __init__(self, session: Session, database: str = "default") -> None:
        self._session = session
        self._database = checked_identifier(database)
        self._session.query(f"CREATE DATABASE IF NOT EXISTS {self._database}")
        zone = self._raw("SELECT timezone()")[0][0]
        # escape_params renders datetimes in the server's zone, as clickhouse-driver does.
        self._context = SimpleNamespace(server_info=SimpleNamespace(get_timezone=lambda: zone))

    def _raw(self, sql: str) -> list[tuple[Any, ...]]:
        # The session is shared by every executor in the process; select this one's database each time.
        self._session.query(f"USE {self._database}")
        try:
            result = self._session.query(sql, "JSONCompact")
        except Exception as exc:  # chdb raises its own error types
            raise StorageError(f"chdb query failed: {exc}") from exc
        payload = result.bytes()
        if not payload.strip():
            return []
        document = orjson.loads(payload)
        converters = [converter(column["type"]) for column in document["meta"]]
        return [tuple(f(v) for f, v in zip(converters, row, strict=True)) for row in document["data"]]

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        # Substituted even without parameters, like DriverExecutor (which always passes a dict): "%%"
        # means "%" on both.
        sql = sql % escape_params(dict(params or {}), self._context)
        return self._raw(sql)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        names = [checked_identifier(c) for c in columns]
        lines = b"\n".join(orjson.dumps(dict(zip(names, map(_json_value, r), strict=True))) for r in rows)
        sql = f"INSERT INTO {checked_identifier(table)} ({', '.join(names)}) FORMAT JSONEachRow\n{lines.decode()}"
        self._raw(sql)

    def close(self) -> None:
        """Nothing to release per executor; the session belongs to the test session."""
