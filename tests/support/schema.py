"""Column types of the ClickHouse tables, read from the migrations, and a check that a row fits them.

The sink's row builders are pure, so a fuzz test can hold every row they produce to what ClickHouse would
accept (DateTime in range, unsigned ints non-negative and within their width, strings encodable as UTF-8)
without a server: a row that passes here is one a real insert takes (the real-service tests prove that part).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from pingan.schemas.envelope import EARLIEST_TIME

MIGRATIONS = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse" / "migrations"
_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*?)\)\s*ENGINE", re.S)
_ADD = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (?:IF NOT EXISTS )?(\w+) ([^;]+?)(?: DEFAULT [^;]+)?;")
_COLUMN = re.compile(r"^\s*(\w+)\s+(.+?),?\s*(--.*)?$")
# What the worker stores: no time after this (DateTime holds up to 2106; nothing real is that far ahead).
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)


@cache
def column_types() -> dict[str, dict[str, str]]:
    tables: dict[str, dict[str, str]] = {}
    for path in sorted(MIGRATIONS.glob("*.sql")):
        text = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
        for table, body in _CREATE.findall(text):
            columns = tables.setdefault(table, {})
            for line in body.splitlines():
                match = _COLUMN.match(line)
                if match:
                    columns[match.group(1)] = match.group(2).strip().rstrip(",")
        for table, column, spec in _ADD.findall(text):
            tables.setdefault(table, {})[column] = spec.strip()
    return tables


_UINT = {"UInt8": 8, "UInt16": 16, "UInt32": 32, "UInt64": 64}


def problem(spec: str, value: Any) -> str | None:
    """Why ``value`` cannot go into a column of type ``spec`` (None: it can)."""
    if spec.startswith("LowCardinality("):
        spec = spec[len("LowCardinality(") : -1]
    if spec.startswith("Nullable("):
        return None if value is None else problem(spec[len("Nullable(") : -1], value)
    if spec.startswith("Array("):
        if not isinstance(value, list | tuple):
            return f"{value!r} is not an array"
        return next((p for p in (problem(spec[6:-1], item) for item in value) if p), None)
    if spec in _UINT:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** _UINT[spec]
        return None if ok else f"{value!r} is not a {spec}"
    if spec.startswith("DateTime"):
        low, high = int(EARLIEST_TIME.timestamp()), int(LATEST_TIME.timestamp())
        return None if isinstance(value, int) and low <= value <= high else f"{value!r} is not a time the sink stores"
    if spec == "Float64":
        return None if isinstance(value, int | float) and not math.isinf(value) else f"{value!r} is not a Float64"
    if spec == "String":
        if not isinstance(value, str):
            return f"{value!r} is not a string"
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            return f"not UTF-8: {exc}"
        return None
    raise AssertionError(f"no check for column type {spec}")


# DateTime columns where 0 (1970-01-01) means "not yet", on purpose.
UNSET_AT_ZERO = {("dead_letters", "replayed_at")}


def row_problems(table: str, columns: Sequence[str], row: Sequence[Any]) -> list[str]:
    types = column_types()[table]
    assert len(columns) == len(row), (columns, row)
    return [
        f"{table}.{name}: {why}"
        for name, value in zip(columns, row, strict=True)
        if not ((table, name) in UNSET_AT_ZERO and value == 0) and (why := problem(types[name], value))
    ]
