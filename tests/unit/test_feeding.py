"""FetchedRecords: the buffer between the consumer's fetches and the worker's batches (pingan.streams.feeding)."""

from __future__ import annotations

import asyncio

import pytest

from pingan.streams.feeding import FetchedRecords
from pingan.streams.pipeline import Record


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(partition: int, first: int, count: int, size: int = 10) -> list[Record]:
    return [Record("events", partition, first + i, None, b"x" * size) for i in range(count)]


def where(batch: list[Record]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in batch]


def test_a_take_is_at_most_max_records_shared_among_the_partitions_each_in_fetch_order() -> None:
    fetched = FetchedRecords(5, 0.5, 10_000, clock=Clock())
    fetched.put(0, records(0, 10, 3))
    fetched.put(1, records(1, 0, 4))
    assert fetched.ready()  # 7 waiting: a batch is full
    assert where(fetched.take()) == [(0, 10), (0, 11), (1, 0), (1, 1), (0, 12)]
    fetched.release()
    assert (fetched.count, fetched.bytes) == (2, 20)
    assert where(fetched.take()) == [(1, 2), (1, 3)]
    assert where(fetched.take()) == []


def test_a_partition_with_a_long_backlog_does_not_hold_the_others_back() -> None:
    fetched = FetchedRecords(6, 0.5, 10_000, clock=Clock())
    fetched.put(0, records(0, 0, 100))
    fetched.put(1, records(1, 0, 1))
    fetched.put(2, records(2, 0, 2))
    fetched.put(0, records(0, 100, 10))  # the next fetch: behind partition 0's earlier records
    assert where(fetched.take()) == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (0, 2)]
    assert where(fetched.take()) == [(0, i) for i in range(3, 9)]
    assert fetched.partitions() == {0}
    assert fetched.count == 110 - 9


def test_a_take_holds_at_most_max_bytes_of_values_but_always_one_record() -> None:
    fetched = FetchedRecords(100, 0.5, 25, clock=Clock())
    fetched.put(0, records(0, 0, 2, size=10) + records(0, 2, 1, size=40) + records(0, 3, 1, size=5))
    assert fetched.ready()  # 65 bytes waiting
    assert where(fetched.take()) == [(0, 0), (0, 1)]  # 20 bytes; 60 would be too many
    assert where(fetched.take()) == [(0, 2)]  # 40 bytes alone: larger than a batch, a batch of its own
    assert where(fetched.take()) == [(0, 3)]
    assert (fetched.count, fetched.bytes) == (0, 0)


def test_a_part_batch_is_ready_once_its_oldest_record_waited_within() -> None:
    clock = Clock()
    fetched = FetchedRecords(5, 0.5, 10_000, clock=clock)
    assert not fetched.ready()
    assert fetched.deadline() is None
    fetched.put(0, records(0, 0, 2))
    clock.now += 0.3
    fetched.put(1, records(1, 0, 1))
    assert fetched.deadline() == pytest.approx(100.5)
    clock.now = 100.49
    assert not fetched.ready()
    clock.now = 100.5
    assert fetched.ready()
    assert where(fetched.take()) == [(0, 0), (0, 1), (1, 0)]


def test_the_rest_of_a_cut_run_keeps_its_arrival_time() -> None:
    clock = Clock()
    fetched = FetchedRecords(2, 0.5, 10_000, clock=clock)
    fetched.put(0, records(0, 0, 3))
    clock.now += 0.2
    fetched.take()
    assert fetched.deadline() == pytest.approx(100.5)  # offset 2 arrived with 0 and 1


def test_drop_forgets_the_partitions_records_only() -> None:
    clock = Clock()
    fetched = FetchedRecords(100, 0.5, 10_000, clock=clock)
    fetched.put(0, records(0, 0, 3))
    clock.now += 0.1
    fetched.put(1, records(1, 0, 2, size=7))
    fetched.put(0, records(0, 3, 2))
    fetched.put(2, records(2, 5, 1))
    assert fetched.drop([0, 3]) == 5
    assert (fetched.count, fetched.bytes) == (3, 24)
    assert fetched.partitions() == {1, 2}
    assert fetched.deadline() == pytest.approx(100.6)  # the oldest left came 0.1 s later
    assert fetched.drop([0]) == 0
    assert where(fetched.take()) == [(1, 0), (1, 1), (2, 5)]


def test_room_is_while_less_than_a_batch_waits() -> None:
    fetched = FetchedRecords(3, 0.5, 100, clock=Clock())
    fetched.put(0, records(0, 0, 2))
    assert fetched.has_room()
    fetched.put(0, records(0, 2, 5))  # a whole fetch lands on top
    assert not fetched.has_room()
    fetched.take()  # 3 of 7
    assert not fetched.has_room()
    fetched.take()
    assert fetched.has_room()
    fetched.put(1, records(1, 0, 1, size=100))  # a batch of bytes
    assert not fetched.has_room()


async def test_the_fetch_waits_for_room_until_a_take_or_a_drop() -> None:
    fetched = FetchedRecords(2, 0.5, 10_000)
    fetched.put(0, records(0, 0, 2))
    fetched.put(1, records(1, 0, 1))
    waiting = asyncio.create_task(fetched.room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    fetched.drop([1])  # still 2 waiting
    await asyncio.sleep(0.01)
    assert not waiting.done()
    fetched.take()
    await asyncio.wait_for(waiting, 1)


async def test_wait_ready_returns_at_a_full_batch_at_once_and_else_after_within() -> None:
    loop = asyncio.get_running_loop()
    fetched = FetchedRecords(3, 0.1, 10_000)
    waiting = asyncio.create_task(fetched.wait_ready())
    await asyncio.sleep(0.02)
    assert not waiting.done()  # nothing waiting: no deadline
    began = loop.time()
    fetched.put(0, records(0, 0, 1))
    await asyncio.wait_for(waiting, 1)
    assert 0.08 <= loop.time() - began < 0.5
    fetched.take()
    waiting = asyncio.create_task(fetched.wait_ready())
    fetched.put(0, records(0, 1, 1))
    began = loop.time()
    await asyncio.sleep(0.01)
    fetched.put(1, records(1, 0, 2))
    await asyncio.wait_for(waiting, 1)
    assert loop.time() - began < 0.08  # full: no waiting out within
    assert where(fetched.take()) == [(0, 1), (1, 0), (1, 1)]


async def test_settled_waits_for_the_batch_in_hand() -> None:
    fetched = FetchedRecords(5, 0.5, 10_000)
    await asyncio.wait_for(fetched.settled(), 1)  # nothing taken
    fetched.put(0, records(0, 0, 2))
    fetched.take()
    settling = asyncio.create_task(fetched.settled())
    await asyncio.sleep(0.01)
    assert not settling.done()
    fetched.release()
    await asyncio.wait_for(settling, 1)
