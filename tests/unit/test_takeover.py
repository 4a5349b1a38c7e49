"""A partition's window state handed from worker to worker through its changelog (PartitionState.checkpoint and
restore, with the pipeline): pure, no Kafka.

The 2-worker mismatch (bench/rebalance_stall.py): after a takeover, one busy grid's window rows had the same
counts as the single worker's and another hour's score. The lead was that ``unrowed`` and ``rows_bucket`` (which
windows still owe a row) are not in the changelog. They need not be: ``unrowed`` is empty after every batch (its
last window rows are emitted before the checkpoint), and the first rows after a restore are emitted at the bucket
of the restored watermark, which is where the previous owner left ``rows_bucket``. The first test below hands a
partition over twice at other batch boundaries and gets the single worker's state and final window rows. The
cause was in the consumer: Faust also seeks while it is still reading the table back after a rebalance (from
getmany, when it finds the flow stopped), and the worker then restored and used partitions' states from that
table, before the recovery of the assignment had finished. It now positions partitions only once it has
(pingan.streams.app.rewinding_consumer, LogWatch.recovered).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan.index.records import WindowRow
from pingan.streams.app import LogWatch
from pingan.streams.pipeline import PipelineConfig, Record, process_batch
from pingan.streams.windows import PartitionState
from tests.unit.test_pipeline import GRIDS, INDEX, SPEC, call

CONFIG = PipelineConfig(index=INDEX, partitions=1)
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=12)
Changelog = list[tuple[str, bytes | None]]
Rows = dict[tuple[str, datetime], WindowRow]


def _records(count: int, seed: int = 3) -> list[Record]:
    """A busy partition: bursts on G1, a trickle elsewhere, a few seconds of disorder, 20 s apart."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        at = T0 + timedelta(seconds=i * 20 - rng.randint(0, 15))
        grid = "G1" if i % 3 == 0 or 90 < i < 150 else rng.choice(["G2", "G3"])
        document = call(f"e-{i}", grid, at, rng.choice(["criminal", "dispute"]), rng.randint(1, 4))
        records.append(Record("events", 0, i, None, orjson.dumps(document), None))
    return records


def _work(state: PartitionState, records: list[Record], batch: int, changelog: Changelog, rows: Rows) -> None:
    """Process records in batches: each batch's checkpoint appended to the changelog in order, and its window rows
    kept as grid_windows keeps them (the highest version of each window; of equal versions, the last written)."""
    for i in range(0, len(records), batch):
        result = process_batch(records[i : i + batch], state, GRIDS, CONFIG, now=NOW)
        changelog += result.checkpoint
        for row in result.window_rows:
            key = (row.grid_id, row.window_start)
            if key not in rows or row.version >= rows[key].version:
                rows[key] = row


def _restore(changelog: Changelog) -> PartitionState:
    """What a worker restores from the changelog read back: the last value of each key, deletions applied."""
    table: dict[str, bytes] = {}
    for key, value in changelog:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    state = PartitionState(SPEC)
    state.restore(table.items())
    return state


def _counts(state: PartitionState) -> dict[str, dict[int, dict]]:
    return {grid: {start: dict(b.counts) for start, b in buckets.items()} for grid, buckets in state.buckets.items()}


@pytest.mark.parametrize(("taken", "given_back", "batches"), [
    (100, 180, (17, 31, 11)), (37, 250, (5, 64, 9)), (150, 151, (40, 1, 23)),
])  # fmt: skip
def test_a_state_handed_over_twice_is_the_state_and_the_window_rows_of_one_worker(
    taken: int, given_back: int, batches: tuple[int, int, int]
) -> None:
    records = _records(300)
    alone, alone_rows = PartitionState(SPEC), {}
    _work(alone, records, 23, [], alone_rows)

    changelog: Changelog = []
    rows: Rows = {}
    first = PartitionState(SPEC)
    _work(first, records[:taken], batches[0], changelog, rows)  # worker A, then B takes over
    second = _restore(changelog)
    assert second.done_offset == taken - 1 and _counts(second) == _counts(first) and not second.unrowed
    _work(second, records[taken:given_back], batches[1], changelog, rows)
    third = _restore(changelog)  # A takes it back
    _work(third, records[third.done_offset + 1 :], batches[2], changelog, rows)
    assert _counts(third) == _counts(alone)
    assert {g: r.to_bytes() for g, r in third.risks.items()} == {g: r.to_bytes() for g, r in alone.risks.items()}
    assert (third.watermark_ms, third.scored_ms, third.done_offset) == (alone.watermark_ms, alone.scored_ms, 299)
    assert rows.keys() == alone_rows.keys()
    assert {k: (r.events, r.score, r.level) for k, r in rows.items()} == {
        k: (r.events, r.score, r.level) for k, r in alone_rows.items()
    }


def test_partitions_are_positioned_only_once_the_table_of_the_latest_assignment_is_read_back() -> None:
    watch = LogWatch("127.0.0.1:9092")
    assert watch.recovered_at != watch.assignments  # before the first assignment's recovery
    watch.assignments += 1  # assigned
    watch.recovered()  # Faust finished reading the table back (on_rebalance_complete)
    assert watch.recovered_at == watch.assignments
    watch.assignments += 2  # revoked and assigned again: the table is being read back
    assert watch.recovered_at != watch.assignments
