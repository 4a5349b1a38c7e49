"""partition_for_key must agree with aiokafka's DefaultPartitioner bit for bit: the worker relies on it."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from pingan.partitioning import _murmur2_fallback, partition_for_key
from tests.support.defaults import shipped_registry


def _keys() -> list[bytes]:
    rng = random.Random(7)
    keys = [b"", b"a", b"ab", b"abc", b"abcd", b"abcde", "网格".encode(), b"\xff" * 9, b"\x00" * 3]
    keys += [rng.randbytes(rng.randint(0, 40)) for _ in range(2000)]
    keys += [f"PA0{s}-C{c:02d}-G{g:02d}".encode() for s in range(1, 6) for c in range(1, 18) for g in range(1, 52)]
    return keys


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 5, 8, 12, 16, 64])
def test_matches_aiokafka_default_partitioner(partitions: int) -> None:
    all_partitions = list(range(partitions))
    partitioner = DefaultPartitioner()
    for key in _keys():
        assert partition_for_key(key, partitions) == partitioner(key, all_partitions, all_partitions), key


def test_fallback_murmur2_is_the_same_function() -> None:
    for key in _keys():
        assert _murmur2_fallback(key) == aiokafka_murmur2(key), key


def test_every_demo_grid_gets_a_stable_partition_and_all_partitions_are_used() -> None:
    registry = shipped_registry()
    used = {partition_for_key(grid.grid_id.encode(), 4) for grid in registry.grids}
    assert used == {0, 1, 2, 3}


def test_rejects_zero_partitions() -> None:
    with pytest.raises(ValueError, match="partitions"):
        partition_for_key(b"x", 0)
