"""The file tailer: pure position logic, and the loop on real files with a fake broker."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from pingan.errors import ConfigError
from pingan.feeds import load_feeds
from pingan.producers.adapters import adapter_for
from pingan.producers.adapters.base import Mapped
from pingan.producers.adapters.delivery import DeliveryReport
from pingan.producers.adapters.tailer import (
    FileTailer,
    FileView,
    TailState,
    complete_lines,
    decide_start,
    default_state_path,
    format_for,
    parse_csv_line,
)
from tests.support.defaults import default_settings

SETTINGS = default_settings()
ADAPTER = adapter_for(SETTINGS, load_feeds(SETTINGS, entry_points=[])["call110"])


def line(number: int) -> bytes:
    record = {
        "incident_id": f"N{number}",
        "category": "dispute",
        "priority": 2,
        "reported_at": "2026-11-23 19:00:00",
        "grid_id": "G1",
    }
    return orjson.dumps(record) + b"\n"


class Broker:
    """A fake publisher: keeps what was 'acknowledged'; can fail before or crash after delivering."""

    def __init__(self) -> None:
        self.batches: list[list[Mapped]] = []
        self.fail_before: int | None = None  # batch number (0-based, counted over calls) that fails unsent
        self.crash_after: int | None = None  # batch number that is delivered, then the process "dies"
        self.calls = 0

    async def publish(self, mapped: Sequence[Mapped]) -> DeliveryReport:
        number, self.calls = self.calls, self.calls + 1
        if number == self.fail_before:
            raise ConnectionError("broker down")
        self.batches.append(list(mapped))
        if number == self.crash_after:
            raise SystemExit("killed between the ack and saving the position")
        return DeliveryReport(sum(m.ok for m in mapped), sum(not m.ok for m in mapped))

    @property
    def ids(self) -> list[str]:
        return [m.envelope["event_id"] for batch in self.batches for m in batch if m.envelope is not None]

    @property
    def errors(self) -> list[Mapped]:
        return [m for batch in self.batches for m in batch if m.error is not None]


def tailer(path: Path, broker: Broker, **options: object) -> FileTailer:
    return FileTailer(path, ADAPTER, broker, state_path=path.with_suffix(".state"), **options)  # type: ignore[arg-type]


# --- pure parts ------------------------------------------------------------------------------------------


def test_complete_lines_keeps_a_partial_line_for_later() -> None:
    chunk = b'{"a":1}\r\n\n  \n{"b":2}\n{"c":'
    lines, end = complete_lines(chunk, 100)
    assert lines == [(100, b'{"a":1}'), (113, b'{"b":2}')]
    assert end == 100 + chunk.index(b'{"c":')
    final, end = complete_lines(chunk, 100, final=True)
    assert final[-1] == (100 + chunk.index(b'{"c":'), b'{"c":') and end == 100 + len(chunk)


@pytest.mark.parametrize(
    ("state", "view", "expected"),
    [
        (TailState("p"), FileView(1, 1, 50, "h"), ("new", 0)),
        (TailState("p", 1, 1, 40, "h"), FileView(1, 1, 50, "h"), ("resume", 40)),
        (TailState("p", 1, 1, 40, "h"), FileView(1, 1, 40, "h"), ("resume", 40)),
        (TailState("p", 1, 1, 40, "h"), FileView(2, 1, 500, "h"), ("rotated", 0)),
        (TailState("p", 1, 1, 40, "h"), FileView(1, 1, 10, "x"), ("truncated", 0)),
        (TailState("p", 1, 1, 40, "h"), FileView(1, 1, 90, "x"), ("replaced", 0)),
    ],
)
def test_decide_start(state: TailState, view: FileView, expected: tuple[str, int]) -> None:
    assert decide_start(state, view) == expected


def test_state_round_trip_and_garbage() -> None:
    state = TailState("/x.jsonl", 12, 3, 4096, "abc")
    assert TailState.from_json(state.to_json(), "/x.jsonl") == state
    with pytest.raises(ValueError, match="unreadable"):
        TailState.from_json(b'{"format": "other"}', "/x.jsonl")


def test_csv_rows_and_paths(tmp_path: Path) -> None:
    assert parse_csv_line(["a", "b"], '"x,1",二'.encode(), "utf-8") == {"a": "x,1", "b": "二"}
    with pytest.raises(ValueError, match="3 columns"):
        parse_csv_line(["a", "b"], b"1,2,3", "utf-8")
    assert format_for(Path("cad.CSV")) == "csv" and format_for(Path("cad.jsonl")) == "jsonl"
    one, two = (
        default_state_path(tmp_path, "call110", Path("/a/x.csv")),
        default_state_path(tmp_path, "call110", Path("/b/x.csv")),
    )
    assert one != two and one.parent == tmp_path / "producers"


# --- the loop --------------------------------------------------------------------------------------------


async def test_resumes_after_restart_and_waits_for_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(b"".join(line(i) for i in range(5)))
    broker = Broker()
    await tailer(path, broker).run(stop_at_eof=True)
    with open(path, "ab") as out:
        out.write(line(5) + line(6) + line(7)[:20])  # the writer is in the middle of line 7
    await tailer(path, broker).run(stop_at_eof=True)
    assert broker.ids == [f"cad-N{i}" for i in range(7)]
    with open(path, "ab") as out:
        out.write(line(7)[20:])
    report = await tailer(path, broker).run(stop_at_eof=True)
    assert broker.ids == [f"cad-N{i}" for i in range(8)]
    assert (report.lines, report.events, report.reopened) == (1, 1, [])


async def test_batches_are_bounded_and_the_position_follows_acks(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(b"".join(line(i) for i in range(25)))
    broker = Broker()
    saved: list[int] = []
    tail = tailer(path, broker, max_lines=10)
    tail.on_saved = lambda state: saved.append(state.position)
    await tail.run(stop_at_eof=True)
    assert [len(b) for b in broker.batches] == [10, 10, 5]
    assert saved == [len(b"".join(line(i) for i in range(n))) for n in (10, 20, 25)]


async def test_a_failed_delivery_does_not_advance(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(b"".join(line(i) for i in range(4)))
    broker = Broker()
    broker.fail_before = 1
    with pytest.raises(ConnectionError):
        await tailer(path, broker, max_lines=2).run(stop_at_eof=True)
    await tailer(path, broker, max_lines=2).run(stop_at_eof=True)
    assert broker.ids == [f"cad-N{i}" for i in range(4)]  # no gap, no duplicate


async def test_a_crash_between_ack_and_save_repeats_only_that_batch(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(b"".join(line(i) for i in range(9)))
    broker = Broker()
    broker.crash_after = 1
    with pytest.raises(SystemExit):
        await tailer(path, broker, max_lines=3).run(stop_at_eof=True)
    await tailer(path, broker, max_lines=3).run(stop_at_eof=True)
    ids = broker.ids
    assert sorted(set(ids)) == sorted(f"cad-N{i}" for i in range(9))
    assert len(ids) == 9 + 3  # the batch delivered but not saved, again; the worker's dedupe absorbs it


async def test_stop_finishes_the_batch_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(b"".join(line(i) for i in range(6)))
    broker = Broker()
    tail = tailer(path, broker, max_lines=2)
    tail.on_saved = lambda state: tail.stop()
    await tail.run()
    assert broker.ids == ["cad-N0", "cad-N1"]
    await tailer(path, broker, max_lines=2).run(stop_at_eof=True)
    assert broker.ids == [f"cad-N{i}" for i in range(6)]


async def test_truncation_while_running_reads_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(b"".join(line(i) for i in range(10)))
    broker = Broker()
    tail = tailer(path, broker)
    assert await tail.step()
    assert not await tail.step()  # at the end
    path.write_bytes(line(100))  # copytruncate, then one new line
    assert await tail.step()  # notices the truncation
    assert await tail.step()
    tail.close()
    assert broker.ids[-1] == "cad-N100" and tail.report.reopened == ["new", "truncated", "new"]


async def test_rotation_while_running_drains_the_old_file_first(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(line(0) + line(1))
    broker = Broker()
    tail = tailer(path, broker)
    await tail.step()
    with open(path, "ab") as out:
        out.write(line(2) + line(3).rstrip(b"\n"))  # the last line of the old file never gets its newline
    os.rename(path, tmp_path / "cad.jsonl.1")
    path.write_bytes(line(4))
    while await tail.step():
        pass
    tail.close()
    assert broker.ids == [f"cad-N{i}" for i in range(5)]
    assert tail.report.reopened == ["new", "rotated", "new"]


async def test_rotation_while_down_finds_the_old_file_by_inode(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(line(0) + line(1))
    broker = Broker()
    await tailer(path, broker).run(stop_at_eof=True)
    with open(path, "ab") as out:
        out.write(line(2))
    os.rename(path, tmp_path / "cad.jsonl.1")
    path.write_bytes(line(3) + line(4))
    report = await tailer(path, broker).run(stop_at_eof=True)
    assert broker.ids == [f"cad-N{i}" for i in range(5)]
    assert report.reopened == ["rotated", "new"]


async def test_a_file_rewritten_in_place_while_down_is_read_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(line(0) + line(1))
    broker = Broker()
    await tailer(path, broker).run(stop_at_eof=True)
    with open(path, "r+b") as out:  # same inode, new content longer than the old position
        out.truncate(0)
        out.write(b"".join(line(i) for i in range(10, 15)))
    report = await tailer(path, broker).run(stop_at_eof=True)
    assert broker.ids == ["cad-N0", "cad-N1", *(f"cad-N{i}" for i in range(10, 15))]
    assert report.reopened == ["replaced"]


async def test_csv_with_bom_gb18030_and_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "cad.csv"
    header = "\ufeff接警单编号,警情类别,警情级别,报警时间,网格编号\n"
    rows = ["JJ1,刑事,一级,2026-11-23 19:05:00,G1\n", "JJ2,纠纷,3\n", "JJ3,火灾,2,2026/11/23 20:00,G2\n"]
    path.write_bytes((header + rows[0] + rows[1]).encode("gb18030"))
    broker = Broker()
    await tailer(path, broker, fmt="csv", encoding="gb18030").run(stop_at_eof=True)
    with open(path, "ab") as out:
        out.write(rows[2].encode("gb18030"))
    await tailer(path, broker, fmt="csv", encoding="gb18030").run(stop_at_eof=True)  # header re-read on resume
    assert broker.ids == ["cad-JJ1", "cad-JJ3"]
    [bad] = broker.errors
    assert bad.error is not None and bad.error.kind == "bad_csv" and "3 columns" in bad.error.reason
    assert bad.raw == rows[1].rstrip("\n").encode("gb18030")
    first = broker.batches[0][0].envelope
    assert first is not None and first["event_time"] == "2026-11-23T11:05:00Z"


async def test_an_overlong_line_is_dead_lettered_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(line(0) + b'{"x": "' + b"a" * 5000 + b'"}\n' + line(1))
    broker = Broker()
    await tailer(path, broker, max_bytes=1024).run(stop_at_eof=True)
    assert broker.ids == ["cad-N0", "cad-N1"]
    [oversize] = broker.errors
    assert oversize.error is not None and oversize.error.kind == "oversize" and len(oversize.raw) <= 4096


async def test_a_missing_file_is_waited_for(tmp_path: Path) -> None:
    broker = Broker()
    tail = tailer(tmp_path / "later.jsonl", broker)
    assert not await tail.step()
    (tmp_path / "later.jsonl").write_bytes(line(1))
    assert await tail.step()
    tail.close()
    assert broker.ids == ["cad-N1"]


async def test_a_corrupt_state_file_stops_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "cad.jsonl"
    path.write_bytes(line(0))
    path.with_suffix(".state").write_text("{")
    with pytest.raises(ConfigError, match="fix or delete"):
        await tailer(path, Broker()).run(stop_at_eof=True)


async def test_a_follower_logs_its_counts_periodically(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """issue 12: `producers tail` in follow mode logged nothing."""
    path = tmp_path / "cad.jsonl"
    path.write_bytes(line(0) + b"{broken\n")
    tail = tailer(path, Broker())
    tail.poll_interval = 0.01

    async def stop_after_a_log_line() -> None:
        while "dead-lettered" not in caplog.text:
            await asyncio.sleep(0.01)
        tail.stop()

    with caplog.at_level(logging.INFO, logger="pingan.producers.adapters.tailer"):
        await asyncio.wait_for(asyncio.gather(tail.run(log_every=0.05), stop_after_a_log_line()), timeout=10)
    logged = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert logged[0].startswith(f"{path} (call110): 2 lines: 1 accepted, 1 dead-lettered (bad_json 1), 1 batches")
