"""Times outside what ClickHouse stores are refused where the record is parsed: by the worker and, with the
same function, by the ingest gateway (which used to accept them with 200 and stall the pipeline)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan.api.ingest_batch import Accepted, ItemRules, Rejected, check_item
from pingan.schemas.payloads import SOURCE_PAYLOADS
from tests.support.events import call110
from tests.unit.test_pipeline import GRIDS

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
RULES = ItemRules.of(GRIDS, SOURCE_PAYLOADS)


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("event_time", "1969-12-31T23:59:59Z", "out_of_range"),
        ("event_time", "0001-01-01T00:00:00Z", "out_of_range"),
        ("event_time", "0001-01-01T00:00:00+08:00", "out_of_range"),  # before year 1 in UTC
        ("event_time", -1, "out_of_range"),
        ("event_time", "1999-12-31T23:59:59Z", "out_of_range"),
        ("event_time", "9999-12-31T23:59:59-12:00", "future_timestamp"),  # after year 9999 in UTC
        ("receive_time", "2200-01-01T00:00:00Z", "future_timestamp"),
        ("receive_time", "1970-01-01T00:00:00Z", "out_of_range"),
    ],
)
def test_the_gateway_refuses_times_the_store_cannot_hold(field: str, value: object, kind: str) -> None:
    item = {**call110("e1", "G1", NOW - timedelta(minutes=1)), field: value}
    outcome = check_item(0, item, source="call110", now=NOW, rules=RULES)
    assert isinstance(outcome, Rejected)
    assert (outcome.error.kind, outcome.error.field) == (kind, field)


def test_the_window_edges_are_accepted() -> None:
    for at in (datetime(2000, 1, 1, tzinfo=UTC), NOW + timedelta(minutes=5)):
        outcome = check_item(0, call110("e1", "G1", at), source="call110", now=NOW, rules=RULES)
        assert isinstance(outcome, Accepted), outcome


def test_the_shipped_json_schemas_say_what_the_check_does(tmp_path) -> None:
    """Producers in other languages read schemas/jsonschema/: it must be the export of today's models."""
    from pingan.schemas.export import SCHEMA_DIR, export

    for path in export(tmp_path):
        assert path.read_bytes() == (SCHEMA_DIR / path.name).read_bytes(), f"run `pingan schemas`: {path.name} is stale"
    envelope = orjson.loads((SCHEMA_DIR / "envelope.schema.json").read_bytes())
    assert envelope["properties"]["event_time"]["formatMinimum"] == "2000-01-01T00:00:00Z"
