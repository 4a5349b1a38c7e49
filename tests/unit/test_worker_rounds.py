"""A take of event batch records is worked in rounds (Worker._handle): while one round is stored, the next is
processed; each round's writes start only after the round before is checkpointed, and the take returns only
after the last round's checkpoint. The writes are fakes that note what happened when; the worker and its
pipeline are real (no service is touched: nothing connects until the app starts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pingan.feeds import load_feeds
from pingan.grids import GridRegistry
from pingan.index.loading import load_index
from pingan.schemas.batch import encode_batch
from pingan.settings import Settings
from pingan.streams.app import Worker, create_app
from pingan.streams.pipeline import BatchResult, Record
from tests.unit.test_pipeline import call

STORE_S = 0.3  # a store long enough that processing a round of a few hundred events fits in it


def _worker(tmp_path: Path) -> Worker:
    settings = Settings(data_dir=tmp_path, topic_partitions=1, batch_max_bytes=64 * 1024)
    registry = GridRegistry.load(settings.grid_registry_path)
    _, worker = create_app(settings, registry, load_index(settings, load_feeds(settings)).config)
    return worker


def _rounds_of(worker: Worker, rounds: int) -> list[Record]:
    """Batch records of ~50 KB: each is a round of its own (batch_max_bytes 64 KB)."""
    grid_id = worker.grids.grids[0].grid_id
    at = datetime.now(UTC) - timedelta(minutes=30)
    records = []
    for offset in range(rounds):
        envelopes = [orjson.dumps(call(f"e{offset}-{i}", grid_id, at + timedelta(seconds=i))) for i in range(180)]
        records.append(Record(worker.settings.topic_events, 0, offset, None, encode_batch(envelopes), None))
    assert all(40_000 < len(r.value) < 64 * 1024 for r in records)
    return records


class Writes:
    """Fake store (on a thread, as ClickHouse's is), publish and checkpoint, noting (what, round, time)."""

    def __init__(self, worker: Worker, fail_store_of: int | None = None) -> None:
        self.log: list[tuple[str, int, float]] = []
        self.fail_store_of = fail_store_of
        self._rounds = 0
        process = worker._process_round

        def noted_process(*args: Any) -> Any:
            self.log.append(("process", self._rounds, time.perf_counter()))
            out = process(*args)
            self.log.append(("processed", self._rounds, time.perf_counter()))
            self._rounds += 1
            return out

        worker._process_round = noted_process  # type: ignore[method-assign]
        worker.storage.write = self.store  # type: ignore[method-assign]
        worker._publish = self.publish  # type: ignore[method-assign]
        worker._checkpoint = self.checkpoint  # type: ignore[method-assign]
        self._stored = 0

    def _note(self, what: str, round_: int) -> None:
        self.log.append((what, round_, time.perf_counter()))

    async def store(self, results: Sequence[BatchResult], ingested_at: datetime) -> None:
        round_ = self._stored
        self._stored += 1
        self._note("store", round_)
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, STORE_S)
        if round_ == self.fail_store_of:
            raise RuntimeError("ClickHouse refused the round")
        self._note("stored", round_)

    async def publish(self, results: Sequence[BatchResult], now: datetime) -> None:
        self._note("published", self._stored - 1)

    async def checkpoint(self, results: Sequence[tuple[int, BatchResult]]) -> None:
        self._note("checkpointed", self._stored - 1)

    def at(self, what: str, round_: int) -> float:
        return next(t for w, r, t in self.log if w == what and r == round_)


async def test_a_round_is_processed_while_the_one_before_is_stored_and_written_in_order(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    writes = Writes(worker)
    await worker._handle(_rounds_of(worker, 3))
    for round_ in (1, 2):
        # the overlap: this round was processed while the round before was being stored
        assert writes.at("store", round_ - 1) < writes.at("process", round_)
        assert writes.at("processed", round_) < writes.at("stored", round_ - 1)
        # the order: no round's store begins before the round before is checkpointed
        assert writes.at("checkpointed", round_ - 1) < writes.at("store", round_)
    assert [w for w, r, _ in writes.log if r == 2][-1] == "checkpointed"  # the take returned after the last one
    assert worker.processed == 3 and worker.batches == 3
    assert worker.states[0].done_offset == 2


async def test_a_failed_store_fails_the_take_and_no_later_round_is_written(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    writes = Writes(worker, fail_store_of=0)
    with pytest.raises(RuntimeError, match="refused the round"):
        await worker._handle(_rounds_of(worker, 3))
    assert [(w, r) for w, r, _ in writes.log if w != "process" and w != "processed"] == [("store", 0)]
    assert worker.batches == 0  # nothing acknowledged: the batch is replayed after the restart
