"""Tail a growing JSON-lines or CSV export, resuming after a restart without gaps.

The position (a byte offset) lives in a small JSON state file and advances only after the broker
acknowledged every record before it: a restart re-reads at most the last unacknowledged batch, whose
records carry the same event ids (derived from the record) and are absorbed by the worker's dedupe.
Nothing is skipped.

Only complete lines are read: a line without its newline is still being written. CSV files are read line
by line with the header taken from the file's first line (a UTF-8 BOM, as Excel writes, is dropped); a
quoted field containing a newline is therefore not supported and ends up as a bad record. A CSV row the
feed refuses is dead-lettered as a JSON object of its columns (readable, and replayable without the
file's header); its origin is still the line's byte offset. Lines are split on
``\\n`` bytes, which is safe for UTF-8 and GB18030 (the encodings Chinese exports use): neither puts that
byte inside a character.

Rotation and truncation, checked whenever the tailer is at the end of the file and at start-up:

- **rotated** (the path now names another file: logrotate's rename + create): the old file is read to
  its end, including a last line without a newline (its writer has moved on), then the new file from the
  start. If the rotation happened while the tailer was down, the old file is looked for in the same
  directory by its inode (``export.jsonl.1``) and drained from the saved position first.
- **truncated** (smaller than the position: copytruncate, or an export rewritten in place): read again
  from the start. Lines written between the tailer's last read and the truncation are lost: that is
  copytruncate's own race, prefer rename rotation.
- **replaced** (same inode, but the first bytes differ from those seen when the position was saved: the
  file was truncated and refilled past the old position while the tailer was down): from the start.

The pure parts (:func:`complete_lines`, :func:`decide_start`, :class:`TailState`) are separate from the
loop in :class:`FileTailer`.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal, Protocol

import orjson

from pingan.clock import Clock, SystemClock
from pingan.dead_letter import file_origin
from pingan.errors import ConfigError
from pingan.producers.adapters.base import FeedAdapter, Mapped, RecordError
from pingan.producers.adapters.delivery import DeliveryReport

__all__ = [
    "FileTailer", "TailReport", "TailState", "complete_lines", "decide_start", "map_lines", "parse_csv_line",
    "read_lines",
]  # fmt: skip

log = logging.getLogger(__name__)

HEAD_BYTES: Final = 1024  # how much of the file's start identifies it
STATE_FORMAT: Final = "pingan-tail/1"
Format = Literal["jsonl", "csv"]


# --- pure parts -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TailState:
    """Where to resume: the first byte not yet acknowledged, in which file."""

    path: str
    inode: int | None = None
    device: int | None = None
    position: int = 0
    head: str = ""  # digest of the file's first min(position, HEAD_BYTES) bytes when saved

    def to_json(self) -> bytes:
        return orjson.dumps({"format": STATE_FORMAT, **self.__dict__}, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes, path: str) -> TailState:
        try:
            document = orjson.loads(raw)
            if document.get("format") != STATE_FORMAT:
                raise ValueError(f"unknown format {document.get('format')!r}")
            return cls(
                path=str(document["path"]),
                inode=document["inode"],
                device=document["device"],
                position=int(document["position"]),
                head=str(document["head"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"tail state for {path} is unreadable: {exc}") from None


def head_digest(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=16).hexdigest()


@dataclass(frozen=True)
class FileView:
    """What the file at the path looks like now."""

    inode: int
    device: int
    size: int
    head: str  # digest of its first min(saved position, HEAD_BYTES) bytes


Decision = Literal["new", "resume", "rotated", "truncated", "replaced"]


def decide_start(state: TailState, current: FileView) -> tuple[Decision, int]:
    """Where to start reading the file at the path, given the saved state."""
    if state.inode is None:
        return "new", 0
    if (state.inode, state.device) != (current.inode, current.device):
        return "rotated", 0
    if current.size < state.position:
        return "truncated", 0
    if state.head and current.head != state.head:
        return "replaced", 0
    return "resume", state.position


def complete_lines(chunk: bytes, start: int, *, final: bool = False) -> tuple[list[tuple[int, bytes]], int]:
    """The complete lines in ``chunk`` (read at file offset ``start``): ``(offset, line)`` without the line
    ending, skipping blank lines, and the offset just after the last complete line. ``final`` treats a last
    line without a newline as complete (a rotated file's writer is done with it)."""
    lines: list[tuple[int, bytes]] = []
    position = 0
    while True:
        end = chunk.find(b"\n", position)
        if end < 0:
            break
        line = chunk[position:end].rstrip(b"\r")
        if line.strip():
            lines.append((start + position, line))
        position = end + 1
    if final and position < len(chunk):
        line = chunk[position:].rstrip(b"\r")
        if line.strip():
            lines.append((start + position, line))
        position = len(chunk)
    return lines, start + position


def parse_csv_line(header: Sequence[str], line: bytes, encoding: str) -> dict[str, Any]:
    """One CSV row as a dict keyed by the header. Raises ValueError for a row that is not one."""
    text = line.decode(encoding)
    rows = list(csv.reader([text], strict=True))
    if len(rows) != 1:
        raise ValueError("not exactly one CSV row")
    values = rows[0]
    if len(values) != len(header):
        raise ValueError(f"{len(values)} columns, the header has {len(header)}")
    return dict(zip(header, values, strict=True))


def parse_csv_header(line: bytes, encoding: str) -> list[str]:
    text = line.decode(encoding).removeprefix("\ufeff")
    return [name.strip() for name in next(csv.reader([text], strict=True))]


def map_lines(
    adapter: FeedAdapter,
    lines: Sequence[_Line],
    *,
    path: Path,
    fmt: Format,
    header: Sequence[str] | None,
    encoding: str,
    max_bytes: int,
    now: datetime,
) -> list[Mapped]:
    """Each line of ``path`` as an envelope or a dead letter whose origin is the file and the line's offset.
    Pure: what the tailer sends and what ``pingan producers check`` shows are the same mapping."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    where = str(path.resolve())
    results = []
    for line in lines:
        origin = file_origin(where, line.offset)
        if line.oversize:
            reason = f"the line is longer than {max_bytes} bytes (its first 4 KiB are kept)"
            results.append(adapter.failed(line.data, origin, RecordError("oversize", None, reason), now=now))
        elif fmt == "csv":
            assert header is not None
            try:
                record = parse_csv_line(header, line.data, encoding)
            except (ValueError, csv.Error) as exc:
                results.append(adapter.failed(line.data, origin, RecordError("bad_csv", None, str(exc)), now=now))
                continue
            # Its dead letter is the row as a JSON object: readable, and replayable without the file's header.
            results.append(adapter.map_record(record, orjson.dumps(record), origin, now=now))
        elif utf8:
            results.append(adapter.map_line(line.data, origin, now=now))
        else:
            try:
                text = line.data.decode(encoding).encode()
            except UnicodeDecodeError as exc:
                results.append(adapter.failed(line.data, origin, RecordError("bad_json", None, str(exc)), now=now))
                continue
            results.append(adapter.map_line(text, origin, now=now))
    return results


def read_lines(path: Path, fmt: Format, encoding: str) -> tuple[list[_Line], list[str] | None]:
    """Every complete line of a whole file (a last line without a newline too), and the CSV header."""
    data = path.read_bytes()
    header: list[str] | None = None
    start = 0
    if fmt == "csv":
        end = data.find(b"\n")
        if end < 0:
            end = len(data)
        header = parse_csv_header(data[:end].rstrip(b"\r"), encoding)
        start = end + 1
    found, _ = complete_lines(data[start:], start, final=True)
    return [_Line(offset, line) for offset, line in found], header


# --- the loop ---------------------------------------------------------------------------------------------


class Publisher(Protocol):
    async def publish(self, mapped: Sequence[Mapped]) -> DeliveryReport: ...


@dataclass
class TailReport:
    lines: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    reopened: list[str] = field(default_factory=list)  # decisions other than a plain resume, in order
    dead_letters_by_kind: Counter[str] = field(default_factory=Counter)
    last_seen: datetime | None = None  # when the last line was read

    def add(self, mapped: Sequence[Mapped], report: DeliveryReport, now: datetime) -> None:
        self.lines += len(mapped)
        self.events += report.events
        self.dead_letters += report.dead_letters
        self.batches += 1
        self.dead_letters_by_kind.update(m.letter.kind for m in mapped if m.letter is not None)
        self.last_seen = now

    def summary(self) -> str:
        """The periodic log line: counts so far, dead letters by kind, when a line was last read."""
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.dead_letters_by_kind.items()))
        last = self.last_seen.isoformat() if self.last_seen else "never"
        return (
            f"{self.lines} lines: {self.events} accepted, {self.dead_letters} dead-lettered"
            + (f" ({kinds})" if kinds else "")
            + f", {self.batches} batches, last line read {last}"
            + (f", reopened: {', '.join(self.reopened)}" if self.reopened else "")
        )


@dataclass(frozen=True, slots=True)
class _Line:
    offset: int
    data: bytes
    oversize: bool = False


@dataclass
class _Open:
    handle: BinaryIO
    inode: int
    device: int
    position: int
    header: list[str] | None = None
    draining: bool = False  # a rotated-away file: read to its very end, then switch


class FileTailer:
    """Tails ``path`` into ``publisher`` through ``adapter``; the position is kept in ``state_path``."""

    def __init__(
        self,
        path: Path,
        adapter: FeedAdapter,
        publisher: Publisher,
        *,
        state_path: Path,
        fmt: Format = "jsonl",
        encoding: str = "utf-8",
        max_lines: int = 500,
        max_bytes: int = 1024 * 1024,
        poll_interval: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"format must be jsonl or csv, got {fmt!r}")
        self.path = path
        self.adapter = adapter
        self.publisher = publisher
        self.state_path = state_path
        self.fmt = fmt
        self.encoding = encoding
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.poll_interval = poll_interval
        self.clock = clock or SystemClock()
        self.report = TailReport()
        self._stop = asyncio.Event()
        self._open: _Open | None = None
        # Called after each acknowledged batch's position is saved; tests use it to stop at a chosen point.
        self.on_saved: Callable[[TailState], None] | None = None

    def stop(self) -> None:
        self._stop.set()

    # state file

    def load_state(self) -> TailState:
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return TailState(str(self.path))
        try:
            return TailState.from_json(raw, str(self.path))
        except ValueError as exc:
            # Guessing a position could skip or repeat a whole file: ops decide.
            raise ConfigError(
                f"{exc}; fix or delete {self.state_path} (deleting re-reads {self.path} from the start)"
            ) from None

    def _save(self, opened: _Open) -> TailState:
        head = os.pread(opened.handle.fileno(), min(opened.position, HEAD_BYTES), 0)
        state = TailState(str(self.path), opened.inode, opened.device, opened.position, head_digest(head))
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(temporary, "wb") as out:
            out.write(state.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.state_path)
        if self.on_saved is not None:
            self.on_saved(state)
        return state

    # opening

    def _open_path(self, path: Path) -> tuple[BinaryIO, os.stat_result] | None:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - kept open across batches, closed in _close
        except FileNotFoundError:
            return None
        return handle, os.fstat(handle.fileno())

    def _start(self) -> _Open | None:
        """Open the file to read next, from the saved state (see the module docstring)."""
        state = self.load_state()
        opened = self._open_path(self.path)
        if opened is None:
            return None
        handle, stat = opened
        head = os.pread(handle.fileno(), min(state.position, HEAD_BYTES), 0)
        decision, position = decide_start(state, FileView(stat.st_ino, stat.st_dev, stat.st_size, head_digest(head)))
        if decision != "resume":
            self.report.reopened.append(decision)
            log.info("%s: %s, reading from byte %d", self.path, decision, position)
        if decision == "rotated":
            old = self._find_rotated(state)
            if old is not None:
                handle.close()
                log.info("%s: draining the rotated file %s from byte %d", self.path, old[0].name, state.position)
                return _Open(old[1], state.inode or 0, state.device or 0, state.position, draining=True)
        return _Open(handle, stat.st_ino, stat.st_dev, position)

    def _find_rotated(self, state: TailState) -> tuple[Path, BinaryIO] | None:
        for sibling in sorted(self.path.parent.iterdir()):
            with contextlib.suppress(OSError):
                stat = sibling.stat()
                if (stat.st_ino, stat.st_dev) == (state.inode, state.device) and sibling != self.path:
                    return sibling, open(sibling, "rb")
        return None

    def close(self) -> None:
        """Close the file (run() does; for callers driving :meth:`step` themselves)."""
        self._close()

    def _close(self) -> None:
        if self._open is not None:
            self._open.handle.close()
            self._open = None

    def _switched(self, opened: _Open) -> str | None:
        """At the end of the open file: has the path moved on (rotated) or shrunk (truncated)?"""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None  # between a rotation's rename and create: keep waiting on the old file
        if (stat.st_ino, stat.st_dev) != (opened.inode, opened.device):
            return "rotated"
        if stat.st_size < opened.position:
            return "truncated"
        return None

    # reading

    def _header(self, opened: _Open) -> bool:
        """Read the CSV header (the first line); False while it is not complete yet."""
        chunk = os.pread(opened.handle.fileno(), 64 * 1024, 0)
        end = chunk.find(b"\n")
        if end < 0:
            return False
        opened.header = parse_csv_header(chunk[:end].rstrip(b"\r"), self.encoding)
        opened.position = max(opened.position, end + 1)
        return True

    def _read_batch(self, opened: _Open) -> tuple[list[_Line], int]:
        """At most ``max_lines`` complete lines from one read of at most ``max_bytes``, and where they end."""
        position = opened.position
        chunk = os.pread(opened.handle.fileno(), self.max_bytes, position)
        if not chunk:
            return [], position
        found, end = complete_lines(chunk, position, final=opened.draining and len(chunk) < self.max_bytes)
        if end == position:
            if len(chunk) < self.max_bytes:
                return [], position  # a line still being written
            return self._skip_long_line(opened, position)
        if len(found) > self.max_lines:
            end = found[self.max_lines][0]  # the next batch starts at the first line left out
            found = found[: self.max_lines]
        return [_Line(offset, data) for offset, data in found], end

    def _skip_long_line(self, opened: _Open, position: int) -> tuple[list[_Line], int]:
        """A line longer than a whole read: its start is dead-lettered and reading resumes after it."""
        scan = position + self.max_bytes
        while True:
            chunk = os.pread(opened.handle.fileno(), self.max_bytes, scan)
            if not chunk:
                if opened.draining:
                    return [_Line(position, os.pread(opened.handle.fileno(), 4096, position), True)], scan
                return [], position  # its newline is not written yet
            newline = chunk.find(b"\n")
            if newline >= 0:
                return [_Line(position, os.pread(opened.handle.fileno(), 4096, position), True)], scan + newline + 1
            scan += len(chunk)

    def _map(self, opened: _Open, lines: list[_Line], now: datetime) -> list[Mapped]:
        return map_lines(
            self.adapter, lines, path=self.path, fmt=self.fmt, header=opened.header, encoding=self.encoding,
            max_bytes=self.max_bytes, now=now,
        )  # fmt: skip

    # the loop

    async def step(self) -> bool:
        """Read, deliver and acknowledge one batch. False when there was nothing to read."""
        if self._open is None:
            self._open = self._start()
            if self._open is None:
                return False
        opened = self._open
        if self.fmt == "csv" and opened.header is None and not self._header(opened):
            return False
        lines, end = self._read_batch(opened)
        if lines:
            now = self.clock.now()
            mapped = self._map(opened, lines, now)
            self.report.add(mapped, await self.publisher.publish(mapped), now)
        if end != opened.position:
            opened.position = end
            self._save(opened)  # only now: every line before `end` is acknowledged by the broker
            return True
        if opened.draining:
            log.info("%s: rotated file drained at byte %d", self.path, opened.position)
            self._close()
            self._reset_state()
            return True
        switched = self._switched(opened)
        if switched is not None:
            self.report.reopened.append(switched)
            log.info("%s: %s, reading from the start", self.path, switched)
            if switched == "rotated":
                opened.draining = True  # read what the old file still has, including a last partial line
                return True
            self._close()
            self._reset_state()
            return True
        return False

    def _reset_state(self) -> None:
        """Forget the old file: the next open starts the file at the path from its beginning."""
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()

    async def run(self, *, stop_at_eof: bool = False, log_every: float | None = None) -> TailReport:
        """Tail until :meth:`stop` (or, with ``stop_at_eof``, until everything there is was delivered).
        With ``log_every``, log :meth:`TailReport.summary` that often (seconds), so a follower is not silent."""
        loop = asyncio.get_running_loop()
        next_log = loop.time() + log_every if log_every else None
        try:
            while not self._stop.is_set():
                if next_log is not None and loop.time() >= next_log:
                    log.info("%s (%s): %s", self.path, self.adapter.spec.name, self.report.summary())
                    next_log = loop.time() + (log_every or 0)
                if await self.step():
                    continue
                if stop_at_eof:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll_interval)
        finally:
            self._close()
        return self.report


def default_state_path(data_dir: Path, feed: str, path: Path) -> Path:
    """One state file per (feed, absolute path) under the data directory."""
    digest = hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()
    return data_dir / "producers" / f"{feed}-{path.name}-{digest}.state.json"


def format_for(path: Path) -> Format:
    return "csv" if path.suffix.casefold() == ".csv" else "jsonl"
