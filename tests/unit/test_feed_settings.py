"""Feed settings in feeds.toml (a feed defined by [record] alone, place tables, severity from a device field),
the one validation every way in shares, per-feed counts, and the replay decision. Pure, exact outputs."""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from pingan.cli_dead_letters import replay_decision
from pingan.errors import ConfigError, InvalidEvent
from pingan.feeds import (
    FeedCounts,
    FeedRules,
    Place,
    build_feeds,
    feed_counts,
    load_feeds,
    metric_samples,
    read_feeds_config,
)
from pingan.producers.adapters import adapter_for
from pingan.producers.adapters.tailer import TailReport
from pingan.schemas.payloads import DevicePayload
from pingan.settings import REPO_ROOT, Settings
from tests.support.defaults import default_settings

EXAMPLE = REPO_ROOT / "docs" / "examples" / "electrical-fire"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Grids:
    def get(self, grid_id: str) -> object | None:
        return object() if grid_id.startswith("PA") else None

    def locate(self, lon: float, lat: float) -> object | None:
        return SimpleNamespace(grid_id="PA01-C06-G09") if 103 < lon < 104 else None


@pytest.fixture
def example(tmp_path: Path) -> Settings:
    """The tutorial's feed: its section and place table as docs/examples/electrical-fire ships them."""
    shutil.copy(EXAMPLE / "electrical-fire-places.csv", tmp_path)
    shutil.copy(EXAMPLE / "feeds.toml", tmp_path / "feeds.toml")
    return default_settings(feeds_config_path=tmp_path / "feeds.toml")


def _records() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (EXAMPLE / "alarms.jsonl").read_bytes().splitlines() if line.strip()]


def test_the_example_feed_is_defined_by_its_section_alone(example: Settings) -> None:
    spec = load_feeds(example, entry_points=[])["electrical_fire"]
    assert (spec.origin, spec.payload_model, spec.mapper) == (
        "config",
        DevicePayload,
        "pingan.producers.adapters.device:map_record",
    )
    assert spec.types == {"smoke", "residual_current", "over_temperature", "test"}
    assert spec.places is not None and spec.places.match == ("device_id", "address")
    assert spec.places.entries["ef-0001"] == Place(grid_id="PA01-C06-G08")  # keys compare case-folded
    assert spec.places.entries["幸福路12号"] == Place(103.58951, 30.98247)
    assert spec.severity_rule is not None and spec.severity_rule.values["一级"] == 4


def test_the_example_records_map_as_the_tutorial_says(example: Settings) -> None:
    adapter = adapter_for(example, load_feeds(example, entry_points=[])["electrical_fire"], Grids())
    results = [adapter.map_record(r, orjson.dumps(r), f"file:/a@{n}", now=NOW) for n, r in enumerate(_records())]
    assert results[0].envelope == {
        "event_id": "electrical-fire-EF-0001-A1",
        "source": "electrical_fire",
        "type": "smoke",
        "severity": 4,  # level "1" -> 4
        "event_time": "2026-11-23T11:05:00Z",  # 19:05 Beijing time
        "grid_id": "PA01-C06-G08",  # by device id
        "device_id": "EF-0001",
        "payload": {
            "record_id": "A1", "category": "烟感报警", "device_id": "EF-0001",
            "fields": {"value": 1, "unit": "", "level": "1"},
        },
    }  # fmt: skip
    assert results[1].envelope is not None and results[1].envelope["severity"] == 3  # level "2"
    assert results[2].envelope is not None and results[2].envelope["severity"] == 4  # no level: the type's
    assert results[3].envelope is not None and results[3].envelope["location"] == {"lon": 103.58951, "lat": 30.98247}
    assert results[4].envelope is not None and results[4].envelope["type"] == "test"
    errors = [(r.error.kind, r.error.field) for r in results[5:] if r.error is not None]
    assert errors == [("unknown_category", "alarm_type"), ("unknown_place", "device_id"), ("unknown_severity", "level")]
    assert results[7].error is not None and "level '4' is not in [feeds.electrical_fire.severity.values]" in (
        results[7].error.reason
    )
    letter = results[6].letter
    assert letter is not None and (letter.source, letter.feed, letter.origin) == (
        "tailer",
        "electrical_fire",
        "file:/a@6",
    )


def test_own_coordinates_win_over_the_place_table(example: Settings) -> None:
    adapter = adapter_for(example, load_feeds(example, entry_points=[])["electrical_fire"], Grids())
    record = {**_records()[0], "lon": 103.5, "lat": 30.9}
    result = adapter.map_record(record, b"", "t", now=NOW)
    assert result.envelope is not None and result.envelope["location"] == {"lon": 103.5, "lat": 30.9}
    assert "grid_id" not in result.envelope


def _feed_section(tmp_path: Path, places_csv: str | None, extra: str = "") -> Path:
    if places_csv is not None:
        (tmp_path / "p.csv").write_text(places_csv, encoding="utf-8")
    (tmp_path / "feeds.toml").write_text(
        '[feeds.iot]\n[feeds.iot.record]\nid = "id"\ncategory = "kind"\ntime = "at"\n'
        '[feeds.iot.types]\nalarm = { type = "alarm", severity = 3 }\n'
        + ('[feeds.iot.places]\nfile = "p.csv"\nmatch = "addr"\n' if places_csv is not None else "")
        + extra,
        encoding="utf-8",
    )
    return tmp_path / "feeds.toml"


@pytest.mark.parametrize(
    ("places_csv", "message"),
    [
        ("name,lon,lat\nA,1,2\n", "needs a header with key and lon,lat and/or grid_id"),
        ("key,lon,lat\nA,1,\n", "line 2: give both lon and lat, or neither"),
        ("key,lon,lat,grid_id\nA,,,\n", "line 2: 'A' has neither lon/lat nor a grid_id"),
        ("key,lon,lat\nA,181,2\n", "line 2 lon: 181.0 is outside -180.0..180.0"),
        ("key,lon,lat\nA,x,2\n", "line 2 lon: 'x' is not a number"),
        ("key,grid_id\nＡ,G1\na,G2\n", "line 3: key 'a' is listed twice once normalised"),
        ("key,grid_id\n", "has no entries"),
    ],
)
def test_a_bad_place_table_is_refused_at_start_up_saying_where(tmp_path: Path, places_csv: str, message: str) -> None:
    path = _feed_section(tmp_path, places_csv)
    with pytest.raises(ConfigError, match="place table") as caught:
        build_feeds(read_feeds_config(path), [], config_dir=tmp_path)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[feeds.iot.severity]\nfield = "level"\n', "must be { field = "),
        ('[feeds.iot.severity]\nfield = "level"\nvalues = { "1" = 6 }\n', "severity must be an integer from 1 to 5"),
        ('[feeds.iot.severity]\nfield = "level"\nvalues = { "a" = 1, "A" = 2 }\n', "listed twice once normalised"),
    ],
)
def test_a_bad_severity_rule_is_refused(tmp_path: Path, extra: str, message: str) -> None:
    path = _feed_section(tmp_path, None, extra)
    with pytest.raises(ConfigError) as caught:
        build_feeds(read_feeds_config(path), [], config_dir=tmp_path)
    assert message in str(caught.value)


def test_a_record_section_needs_id_category_time_and_a_types_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs time"):
        build_feeds({"iot": {"record": {"id": "a", "category": "b"}, "types": {}}}, [])
    with pytest.raises(ConfigError, match=r"needs a \[feeds.iot.types\] table"):
        build_feeds({"iot": {"record": {"id": "a", "category": "b", "time": "c"}}}, [])
    with pytest.raises(ConfigError, match="record belong to new feeds"):
        build_feeds({"call110": {"record": {"id": "a", "category": "b", "time": "c"}}}, [])
    with pytest.raises(ConfigError, match=r"describe its records in a \[feeds.nobody.record\] section"):
        build_feeds({"nobody": {"description": "?"}}, [])


def test_a_place_table_serves_a_builtin_feed_too(settings, tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("key,grid_id\n人民路1号,PA01-C06-G08\n", encoding="utf-8")
    section = {
        "places": {"file": "p.csv", "match": ["address", "地址"]},
        "types": {"criminal": {"type": "criminal", "severity": 4}},
    }
    feeds = build_feeds({"call110": section}, [], config_dir=tmp_path)
    adapter = adapter_for(settings, feeds["call110"], Grids())
    cad = {"jjdbh": "J1", "警情类别": "criminal", "priority": 1, "报警时间": "2026-11-23 19:00:00", "地址": "人民路1号"}
    result = adapter.map_record(cad, b"", "t", now=NOW)
    assert result.envelope is not None and result.envelope["grid_id"] == "PA01-C06-G08", result.error


# --- the one validation ---------------------------------------------------------------------------------


def _envelope(**changes: Any) -> bytes:
    envelope = {"event_id": "e1", "source": "call110", "type": "criminal", "severity": 3,
                "event_time": (NOW - timedelta(minutes=1)).isoformat(), "grid_id": "PA01-C06-G08",
                "payload": {"incident_id": "1", "category": "criminal", "priority": 1,
                            "reported_at": NOW.isoformat()}}  # fmt: skip
    return orjson.dumps({**envelope, **changes})


def test_feed_rules_refuse_a_type_outside_the_table_and_a_severity_that_is_not_a_whole_number(settings) -> None:
    rules = FeedRules.of(load_feeds(settings, entry_points=[]))
    assert rules.validate(_envelope(), now=NOW).type == "criminal"
    for changes, kind, field in (
        ({"type": "gas_leak"}, "unknown_type", "type"),
        ({"severity": "4"}, "invalid_field", "severity"),
        ({"severity": 4.0}, "invalid_field", "severity"),
        ({"severity": True}, "invalid_field", "severity"),
        ({"severity": 9}, "out_of_range", "severity"),
    ):
        with pytest.raises(InvalidEvent) as caught:
            rules.validate(_envelope(**changes), now=NOW)
        assert (caught.value.kind, caught.value.field) == (kind, field), changes


def test_a_feed_without_a_category_table_accepts_any_type() -> None:
    rules = FeedRules.of(build_feeds({}, []))
    assert rules.validate(_envelope(type="anything"), now=NOW).type == "anything"


# --- counts ------------------------------------------------------------------------------------------------


def test_feed_counts_list_every_feed_with_accepted_dead_letters_by_kind_and_last_seen() -> None:
    early, late = NOW - timedelta(hours=1), NOW
    counts = feed_counts(
        ["call110", "electrical_fire"],
        [("electrical_fire", 5, early), ("old_feed", 2, early)],
        [
            ("electrical_fire", "unknown_place", 2, late),
            ("electrical_fire", "bad_json", 1, early),
            ("", "bad_json", 3, late),
        ],
    )
    assert counts == [
        FeedCounts("call110"),
        FeedCounts("electrical_fire", 5, {"bad_json": 1, "unknown_place": 2}, late),
        FeedCounts("old_feed", 2, {}, early),
        FeedCounts("", 0, {"bad_json": 3}, late),
    ]
    assert counts[1].as_json() == {
        "feed": "electrical_fire", "accepted": 5, "dead_lettered": 3,
        "dead_lettered_by_kind": {"bad_json": 1, "unknown_place": 2}, "last_seen": late.isoformat(),
    }  # fmt: skip
    assert metric_samples(counts[:2]) == [
        ("pingan_feed_accepted_events", {"feed": "call110"}, 0.0),
        ("pingan_feed_accepted_events", {"feed": "electrical_fire"}, 5.0),
        ("pingan_feed_dead_letters", {"feed": "electrical_fire", "kind": "bad_json"}, 1.0),
        ("pingan_feed_dead_letters", {"feed": "electrical_fire", "kind": "unknown_place"}, 2.0),
        ("pingan_feed_last_seen_seconds", {"feed": "electrical_fire"}, late.timestamp()),
    ]


def test_the_tailers_log_line_counts_by_kind(example: Settings) -> None:
    adapter = adapter_for(example, load_feeds(example, entry_points=[])["electrical_fire"], Grids())
    mapped = [adapter.map_record(r, orjson.dumps(r), "t", now=NOW) for r in _records()]
    report = TailReport()
    report.add(mapped, SimpleNamespace(events=5, dead_letters=3), NOW)  # type: ignore[arg-type]
    assert report.summary() == (
        "8 lines: 5 accepted, 3 dead-lettered (unknown_category 1, unknown_place 1, unknown_severity 1), 1 batches, "
        f"last line read {NOW.isoformat()}"
    )


# --- replay ------------------------------------------------------------------------------------------------


def _row(**changes: Any) -> dict[str, Any]:
    row = {"origin": "http:cad/r#0", "raw": _envelope(source=None).decode(), "raw_size": 0, "feed": "call110",
           "adapter": "", "source": "gateway", "raw_sha256": ""}  # fmt: skip
    row = {**row, **changes}
    row["raw_size"] = row["raw_size"] or len(row["raw"].encode())
    return row


def test_replay_revalidates_an_envelope_taking_a_missing_source_from_the_feed(settings) -> None:
    rules = FeedRules.of(load_feeds(settings, entry_points=[]))
    topics = {"": "t.events"}
    decision = replay_decision(_row(), adapters=lambda _: None, rules=rules, grids=Grids(), topics=topics, now=NOW)
    assert decision.error is None and decision.envelope is not None
    assert (decision.envelope["source"], decision.topic) == ("call110", "t.events")
    refused = replay_decision(_row(raw=_envelope(grid_id="X9").decode()), adapters=lambda _: None, rules=rules,
                              grids=Grids(), topics=topics, now=NOW)  # fmt: skip
    assert refused.error is not None and refused.error.kind == "unknown_grid"
    cut = replay_decision(_row(raw_size=10_000), adapters=lambda _: None, rules=rules, grids=Grids(), topics=topics,
                          now=NOW)  # fmt: skip
    assert cut.error is not None and cut.error.kind == "truncated"
    binary = _row(raw="{\ufffd}", raw_size=3, raw_sha256=hashlib.sha256(b"{\xff}").hexdigest())
    garbled = replay_decision(binary, adapters=lambda _: None, rules=rules, grids=Grids(), topics=topics, now=NOW)
    assert garbled.error is not None and garbled.error.kind == "not_replayable"


def test_replay_maps_a_raw_record_again_with_todays_config(example: Settings) -> None:
    feeds = load_feeds(example, entry_points=[])
    adapter = adapter_for(example, feeds["electrical_fire"], Grids())
    record = _records()[7]  # level "4": not in the severity table yet
    row = _row(raw=orjson.dumps(record).decode(), feed="electrical_fire", adapter="x:y", source="webhook")
    topics = {"": "t.events", "electrical_fire": "t.events"}
    before = replay_decision(row, adapters=lambda _: adapter, rules=None, grids=Grids(), topics=topics, now=NOW)
    assert before.error is not None and before.error.kind == "unknown_severity"
    fixed = example.feeds_config_path.read_text(encoding="utf-8").replace('"1" = 4,', '"1" = 4, "4" = 5,')
    example.feeds_config_path.write_text(fixed, encoding="utf-8")
    adapter = adapter_for(example, load_feeds(example, entry_points=[])["electrical_fire"], Grids())
    after = replay_decision(row, adapters=lambda _: adapter, rules=None, grids=Grids(), topics=topics, now=NOW)
    assert after.envelope is not None and (after.envelope["event_id"], after.envelope["severity"]) == (
        "electrical-fire-EF-0001-A8", 5
    )  # fmt: skip


# --- the webhook of a feed ------------------------------------------------------------------------------


def test_a_webhook_body_gets_the_gateways_outcomes_per_record(example: Settings) -> None:
    from pingan.api.errors import ApiError
    from pingan.api.ingest_batch import Accepted, ItemRules, Rejected, build_response
    from pingan.api.webhooks import webhook_outcomes

    feeds = load_feeds(example, entry_points=[])
    adapter = adapter_for(example, feeds["electrical_fire"], Grids(), source="webhook")
    rules = ItemRules(Grids(), FeedRules.of(feeds))
    body = orjson.dumps(_records())
    outcomes = webhook_outcomes(adapter, body, rules=rules, origin="http:fire/r1", now=NOW, max_batch=10)
    assert [type(o).__name__ for o in outcomes] == ["Accepted"] * 5 + ["Rejected"] * 3
    first = outcomes[0]
    assert isinstance(first, Accepted) and (first.event_id, first.key) == (
        "electrical-fire-EF-0001-A1",
        b"PA01-C06-G08",
    )
    assert outcomes[3].key == b"PA01-C06-G09"  # located by coordinates: keyed by the grid containing them
    refused = outcomes[6]
    assert isinstance(refused, Rejected) and refused.letter is not None
    assert (refused.letter.origin, refused.letter.source, refused.error.kind) == (
        "http:fire/r1#6", "webhook", "unknown_place"
    )  # fmt: skip
    status, answer = build_response(outcomes, "r1")
    assert (status, answer["accepted"], answer["rejected"]) == (207, 5, 3)
    with pytest.raises(ApiError) as caught:
        webhook_outcomes(adapter, body, rules=rules, origin="http:fire/r2", now=NOW, max_batch=7)
    assert (caught.value.status, caught.value.code) == (413, "too_many_events")
