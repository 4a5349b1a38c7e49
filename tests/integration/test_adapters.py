"""The four adapters on the real broker: records in, envelopes on the events topic, bad records on the
dead-letter topic with the reason; the CAD tailer resuming after a restart without gaps."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from pingan.feeds import FeedSpec, load_feeds
from pingan.grids import GridRegistry
from pingan.partitioning import partition_for_key
from pingan.producers.adapters import adapter_for, publisher_for
from pingan.producers.adapters.tailer import FileTailer
from pingan.settings import Settings
from pingan.topics import ensure_topics
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def feeds(settings: Settings) -> dict[str, FeedSpec]:
    await ensure_topics(settings)
    return load_feeds(settings, entry_points=[])


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def local(moment: datetime) -> str:
    """How a CAD export writes a time: Beijing time, no offset."""
    return (moment + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")


async def test_call110_cad_file_to_events_and_dead_letters(
    settings: Settings, feeds: dict[str, FeedSpec], registry: GridRegistry, tmp_path
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    grid = registry.grids[10]
    lon, lat = grid.centroid
    good = [
        {"jjdbh": "JJ1", "警情类别": "刑事", "jqjb": "1", "bjsj": local(at), "lon": lon, "lat": lat},
        {"jjdbh": "JJ2", "警情类别": "纠纷", "jqjb": "二级", "bjsj": local(at), "grid_id": grid.grid_id},
    ]
    bad = [
        '{"jjdbh": "JJ3", "警情类别": "外星人", "jqjb": 1, "bjsj": "2026-11-23 19:00:00", "grid_id": "G"}'.encode(),
        b"this is not json",
    ]
    path = tmp_path / "cad.jsonl"
    path.write_bytes(b"\n".join([orjson.dumps(good[0]), bad[0], orjson.dumps(good[1]), bad[1]]) + b"\n")
    spec = feeds["call110"]
    async with publisher_for(settings, spec, registry) as publisher:
        tail = FileTailer(path, adapter_for(settings, spec), publisher, state_path=tmp_path / "state")
        report = await tail.run(stop_at_eof=True)
    assert (report.events, report.dead_letters) == (2, 2)

    events = await read_topic(settings, settings.topic_events, 2, timeout=20, settle_ms=300)
    by_id = {orjson.loads(r.value)["event_id"]: r for r in events}
    assert sorted(by_id) == ["cad-JJ1", "cad-JJ2"]
    first = orjson.loads(by_id["cad-JJ1"].value)
    assert first["event_time"] == at.isoformat().replace("+00:00", "Z")  # local CAD time -> UTC
    assert (first["type"], first["severity"]) == ("criminal", 4)
    for record in events:  # keyed by grid (the located one for lon/lat), on that grid's partition
        assert record.key == grid.grid_id.encode()
        assert record.partition == partition_for_key(record.key, settings.topic_partitions)

    letters = await read_topic(settings, settings.topic_dead_letters, 2, timeout=20, settle_ms=300)
    assert sorted(r.value for r in letters) == sorted(bad)  # original bytes (nothing personal to redact)
    reasons = {headers(r)["pingan-error-kind"]: headers(r) for r in letters}
    assert set(reasons) == {"unknown_category", "bad_json"}
    assert reasons["unknown_category"]["pingan-error-field"] == "category"
    assert "外星人" in reasons["unknown_category"]["pingan-error-reason"]
    assert reasons["unknown_category"]["pingan-origin"] == f"file:{path}@{len(orjson.dumps(good[0])) + 1}"


async def test_checkpoint_passes_never_put_a_plate_on_the_broker(
    settings: Settings, feeds: dict[str, FeedSpec]
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=1)
    plate = "川A·88888"
    lines = [
        {"kkbh": "KK-1", "fx": "进", "hphm": plate, "gcsj": local(at), "是否布控": "是", "grid_id": "G0002"},
        {"kkbh": "KK-1", "fx": "出", "hphm": "无牌", "gcsj": local(at), "grid_id": "G0002"},
        {"kkbh": "KK-1", "fx": "north", "hphm": plate, "gcsj": local(at), "grid_id": "G0002"},
    ]
    body = b"\n".join(orjson.dumps(line) for line in lines) + f'\n{{"hphm": "{plate}", broken\n'.encode()
    spec = feeds["checkpoint"]
    adapter = adapter_for(settings, spec)
    async with publisher_for(settings, spec) as publisher:
        report = await publisher.publish(adapter.map_document(body, "http:test/r1", now=datetime.now(UTC)))
    assert (report.events, report.dead_letters) == (2, 2)
    events = await read_topic(settings, settings.topic_events, 2, timeout=20, settle_ms=300)
    letters = await read_topic(settings, settings.topic_dead_letters, 2, timeout=20, settle_ms=300)
    assert sorted(orjson.loads(r.value)["type"] for r in events) == ["flagged_pass", "pass"]
    assert {headers(r)["pingan-error-kind"] for r in letters} == {"invalid_field", "bad_json"}
    assert all(headers(r)["pingan-redacted"] == "1" for r in letters)
    for record in (*events, *letters):
        everything = record.value + b"".join(v for _, v in record.headers) + (record.key or b"")
        assert b"88888" not in everything


async def test_app_reports(settings: Settings, feeds: dict[str, FeedSpec]) -> None:
    at = datetime.now(UTC) - timedelta(minutes=1)
    base = {"上报时间": local(at), "grid_id": "G0003"}
    reports = [
        {**base, "sjbh": "R1", "上报人类型": "网格员", "事件类型": "安全隐患", "内容": "井盖缺失"},
        {**base, "sjbh": "R2", "上报人类型": "群众", "phone": "13700001234", "事件类型": "一键报警"},
        {**base, "sjbh": "R3", "上报人类型": "群众", "phone": "13700001234", "事件类型": "闲聊"},
    ]
    spec = feeds["app_report"]
    adapter = adapter_for(settings, spec)
    async with publisher_for(settings, spec) as publisher:
        await publisher.publish(adapter.map_document(orjson.dumps(reports), "http:test/r2", now=datetime.now(UTC)))
    events = await read_topic(settings, settings.topic_events, 2, timeout=20, settle_ms=300)
    assert sorted(orjson.loads(r.value)["event_id"] for r in events) == ["app-R1", "app-R2"]
    [letter] = await read_topic(settings, settings.topic_dead_letters, 1, timeout=20, settle_ms=300)
    assert headers(letter)["pingan-error-kind"] == "unknown_category"
    for record in (*events, letter):
        assert b"13700001234" not in record.value


async def test_cad_tailer_resumes_after_restart_without_gaps(
    settings: Settings, feeds: dict[str, FeedSpec], tmp_path
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=2)

    def lines(numbers: range) -> bytes:
        return b"".join(
            orjson.dumps({"jjdbh": f"T{n}", "jqlb": "求助", "jqjb": 3, "bjsj": local(at), "grid_id": "G0004"}) + b"\n"
            for n in numbers
        )

    path, state = tmp_path / "cad.jsonl", tmp_path / "cad.state"
    path.write_bytes(lines(range(0, 40)))
    spec = feeds["call110"]
    adapter = adapter_for(settings, spec)

    async with publisher_for(settings, spec) as publisher:  # run, stopped after two acknowledged batches
        first = FileTailer(path, adapter, publisher, state_path=state, max_lines=15)
        saved: list[int] = []
        first.on_saved = lambda s: (saved.append(s.position), len(saved) == 2 and first.stop())
        await first.run()
    assert len(saved) == 2
    with open(path, "ab") as out:  # the export grows while the tailer is down
        out.write(lines(range(40, 70)))
    async with publisher_for(settings, spec) as publisher:  # restart: resumes from the saved position
        report = await FileTailer(path, adapter, publisher, state_path=state, max_lines=15).run(stop_at_eof=True)
    assert report.lines == 70 - 30

    records = await read_topic(settings, settings.topic_events, 70, timeout=20, settle_ms=300)
    ids = [orjson.loads(r.value)["event_id"] for r in records]
    assert sorted(ids) == sorted(f"cad-T{n}" for n in range(70))  # every line exactly once


async def test_pingan_producers_tail_command(settings: Settings, registry: GridRegistry, tmp_path) -> None:
    at = datetime.now(UTC) - timedelta(minutes=1)
    path = tmp_path / "cad.csv"
    grid, unknown = registry.grids[5].grid_id, "G0005"
    path.write_text(
        f"接警单编号,警情类别,警情级别,报警时间,网格编号\nC1,火警,1,{local(at)},{grid}\nC2,?,1,{local(at)},{grid}\n"
        f"C3,火警,1,{local(at)},{unknown}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pingan.cli", "producers", "tail", "call110", str(path), "--once"],
        env={**settings.as_env(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # the tailer refuses what the worker would: an unknown category, and a grid the registry does not have
    assert "3 lines: 1 accepted, 2 dead-lettered (unknown_category 1, unknown_grid 1)" in result.stdout
    [event] = await read_topic(settings, settings.topic_events, 1, timeout=20, settle_ms=300)
    assert orjson.loads(event.value)["event_id"] == "cad-C1"
