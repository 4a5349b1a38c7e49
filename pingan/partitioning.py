"""Which partition a key lands on: the same answer as the producer's default partitioner.

All of a grid's events must reach one partition (the worker keeps a grid's window state on the partition
that owns it), so the worker, the producers and the tests must agree with aiokafka's ``DefaultPartitioner``
bit for bit: ``murmur2(key) & 0x7fffffff % partitions``, the Java client's formula. We reuse aiokafka's own
murmur2 when it is importable so the two cannot drift; the fallback is a copy of the same algorithm for
processes that do not install aiokafka (an analyst's notebook, a producer in another runtime's test).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["murmur2", "partition_for_key"]


def _murmur2_fallback(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), unsigned 32-bit result."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


try:
    from aiokafka.partitioner import murmur2 as _aiokafka_murmur2
except ImportError:  # pragma: no cover - aiokafka is a hard dependency of the project
    murmur2: Callable[[bytes], int] = _murmur2_fallback
else:
    murmur2 = _aiokafka_murmur2


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition aiokafka's DefaultPartitioner picks for ``key`` among ``partitions`` partitions."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
