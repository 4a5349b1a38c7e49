"""Event-time window state of one input partition: pure data structures, no Kafka, no Faust.

Design (see docs/architecture.md):
- State is kept per (grid, tumbling bucket). The hopping window is the sum of the buckets it spans, so
  one event updates one bucket, whatever the number of hopping windows it belongs to.
- The watermark is the highest event time seen on the partition (not per grid, so quiet grids still
  close). An event whose bucket ended more than ``allowed_lateness`` before the watermark is late: it is
  stored and published on the late topic, never silently dropped, but it no longer changes the index.
- Each bucket remembers the highest input offset it has absorbed. After a crash, Kafka redelivers
  from the last committed offset; an event at or below a bucket's offset is already in it and is skipped.
  That makes the checkpoint exactly-once per key without transactions: one record per bucket per batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from streams.baseline import BaselineModel
from streams.risk_index import Assessment, Expectations, IndexConfig, Level, assess, shown_level

CountKey = tuple[str, str, int]  # (source, type, severity)


@dataclass(frozen=True)
class WindowSpec:
    bucket_seconds: int = 300
    hop_seconds: int = 3600
    allowed_lateness_seconds: int = 120
    # Closed windows the hysteresis looks back over; their hours need their buckets kept that much longer.
    held_windows: int = 0

    def __post_init__(self) -> None:
        if self.hop_seconds % self.bucket_seconds:
            raise ValueError("the hopping window must be a whole number of buckets")

    def bucket_start(self, epoch_seconds: float) -> int:
        return int(epoch_seconds // self.bucket_seconds) * self.bucket_seconds

    def hop_buckets(self, end_bucket_start: int) -> range:
        """Starts of the buckets in the hopping window whose last bucket starts at ``end_bucket_start``."""
        first = end_bucket_start - self.hop_seconds + self.bucket_seconds
        return range(first, end_bucket_start + 1, self.bucket_seconds)

    def is_late(self, bucket_start: int, watermark_ms: int) -> bool:
        closes_at_ms = (bucket_start + self.bucket_seconds + self.allowed_lateness_seconds) * 1000
        return closes_at_ms <= watermark_ms

    def is_expired(self, bucket_start: int, watermark_ms: int) -> bool:
        """Every window whose hour includes the bucket is closed: nothing can read or change it any more.

        The last such window starts at ``bucket_start + hop - bucket``; it closes at its end plus the
        lateness allowance. Dropping the bucket sooner would let a still-open window be re-scored without it.
        """
        kept = self.hop_seconds + self.allowed_lateness_seconds + self.held_windows * self.bucket_seconds
        return (bucket_start + kept) * 1000 <= watermark_ms

    def last_closed_bucket(self, watermark_ms: int) -> int:
        """Start of the newest bucket that is closed (its lateness allowance has passed)."""
        return self.bucket_start(watermark_ms / 1000 - self.bucket_seconds - self.allowed_lateness_seconds)


@dataclass(slots=True)
class Bucket:
    counts: dict[CountKey, int] = field(default_factory=dict)
    applied_offset: int = -1
    # Hashes of the event ids counted, so a second message with the same id (a producer retry) counts once.
    # Capped: past MAX_TRACKED_IDS events a bucket still counts exactly on replay (offsets), not on retries.
    seen: set[int] = field(default_factory=set)

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    def to_bytes(self) -> bytes:
        counts = [[s, t, v, n] for (s, t, v), n in self.counts.items()]
        return orjson.dumps({"o": self.applied_offset, "c": counts, "s": sorted(self.seen)})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Bucket:
        doc = orjson.loads(raw)
        return cls({(s, t, v): n for s, t, v, n in doc["c"]}, doc["o"], set(doc.get("s", ())))


@dataclass(frozen=True, slots=True)
class GridRisk:
    score: float
    level: Level
    as_of_ms: int
    dominant_source: str
    window_events: int

    def same_values(self, other: GridRisk) -> bool:
        """Equal apart from when it was computed."""
        return (self.score, self.level, self.dominant_source, self.window_events) == (
            other.score, other.level, other.dominant_source, other.window_events,
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.score, self.level.value, self.as_of_ms, self.dominant_source, self.window_events])

    @classmethod
    def from_bytes(cls, raw: bytes) -> GridRisk:
        score, level, as_of_ms, dominant, events = orjson.loads(raw)
        return cls(score, Level(level), as_of_ms, dominant, events)


GREEN = GridRisk(0.0, Level.GREEN, 0, "", 0)


MAX_TRACKED_IDS = 5000


def id_hash(event_id: str) -> int:
    """A stable 63-bit hash (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


class Outcome:
    APPLIED = "applied"
    REPLAYED = "replayed"  # already in the bucket before a restart: skipped
    DUPLICATE = "duplicate"  # another message with an event id already counted: skipped
    LATE = "late"


@dataclass
class PartitionState:
    """Open buckets, last published risk per grid, and the watermark of one input partition."""

    spec: WindowSpec
    buckets: dict[str, dict[int, Bucket]] = field(default_factory=dict)
    risks: dict[str, GridRisk] = field(default_factory=dict)
    watermark_ms: int = 0
    evaluated_bucket: int = -1
    # The last input offset whose batch is fully written (ClickHouse, topics, checkpoint): on a replay after
    # a restart, records at or below it are already done and are skipped outright.
    done_offset: int = -1
    # Assessments of hopping windows while one batch is scored (a window is read for its row, the live level
    # and hysteresis); emptied whenever an event is applied, so it never outlives the counts it was read from.
    _assessed: dict[tuple[str, int], Assessment] = field(default_factory=dict, repr=False, compare=False)

    # --- applying events -------------------------------------------------------------------------------
    def apply(self, grid_id: str, event_ms: int, key: CountKey, offset: int, event_id: str) -> tuple[str, int]:
        """Add one event; return (outcome, bucket start). Events must come in offset order."""
        start = self.spec.bucket_start(event_ms / 1000)
        if self.spec.is_late(start, self.watermark_ms):
            return Outcome.LATE, start
        # The watermark moves on replays too: it must be what it was when the event was first applied.
        if event_ms > self.watermark_ms:
            self.watermark_ms = event_ms
        if self._assessed:
            self._assessed.clear()
        bucket = self.buckets.setdefault(grid_id, {}).setdefault(start, Bucket())
        if offset <= bucket.applied_offset:
            return Outcome.REPLAYED, start
        bucket.applied_offset = offset
        digest = id_hash(event_id)
        if digest in bucket.seen:
            return Outcome.DUPLICATE, start
        if len(bucket.seen) < MAX_TRACKED_IDS:
            bucket.seen.add(digest)
        bucket.counts[key] = bucket.counts.get(key, 0) + 1
        return Outcome.APPLIED, start

    # --- reading windows -------------------------------------------------------------------------------
    def hop_counts(self, grid_id: str, end_bucket_start: int) -> dict[CountKey, int]:
        grid_buckets = self.buckets.get(grid_id, {})
        total: dict[CountKey, int] = {}
        for start in self.spec.hop_buckets(end_bucket_start):
            bucket = grid_buckets.get(start)
            if bucket is not None:
                for key, n in bucket.counts.items():
                    total[key] = total.get(key, 0) + n
        return total

    def expectations(
        self, grid_id: str, end_bucket_start: int, sources: Iterable[str], baseline: BaselineModel
    ) -> Expectations:
        """What the baseline expects of each source in the hopping window ending with the given bucket."""
        starts = self.spec.hop_buckets(end_bucket_start)
        size = self.spec.bucket_seconds
        return {
            source: (baseline.expected(grid_id, source, starts, size), baseline.unit_weight(source))
            for source in sources
        }

    def assess_hop(
        self, grid_id: str, end_bucket_start: int, config: IndexConfig, baseline: BaselineModel | None = None
    ) -> Assessment:
        key = (grid_id, end_bucket_start)
        cached = self._assessed.get(key)
        if cached is not None:
            return cached
        counts = self.hop_counts(grid_id, end_bucket_start)
        if baseline is None:
            assessment = assess(counts, config)
        else:
            sources = {source for source, _, _ in counts}
            assessment = assess(counts, config, self.expectations(grid_id, end_bucket_start, sources, baseline))
        self._assessed[key] = assessment
        return assessment

    def assess_grid(
        self, grid_id: str, config: IndexConfig, baseline: BaselineModel | None = None
    ) -> tuple[Assessment, Level]:
        """The live assessment (the hour ending now) and the level to show after hysteresis."""
        live = self.assess_hop(grid_id, self.current_bucket, config, baseline)
        last_closed = self.spec.last_closed_bucket(self.watermark_ms)
        size = self.spec.bucket_seconds
        closed = [
            self.assess_hop(grid_id, last_closed - i * size, config, baseline).level
            for i in range(config.quiet_windows)
        ]
        return live, shown_level(live.level, closed)

    @property
    def current_bucket(self) -> int:
        return self.spec.bucket_start(self.watermark_ms / 1000)

    def grids_to_evaluate(self, touched: set[str]) -> set[str]:
        """Touched grids, plus every grid with state whenever the watermark entered a new bucket (decay)."""
        if self.current_bucket != self.evaluated_bucket:
            return touched | set(self.buckets) | set(self.risks)
        return touched

    def expire(self) -> list[tuple[str, int]]:
        """Drop buckets no live window needs; return their keys."""
        expired = []
        for grid_id, grid_buckets in list(self.buckets.items()):
            for start in [s for s in grid_buckets if self.spec.is_expired(s, self.watermark_ms)]:
                del grid_buckets[start]
                expired.append((grid_id, start))
            if not grid_buckets:
                del self.buckets[grid_id]
        return expired

    # --- checkpoint records (key, value or None for a deletion) ----------------------------------------
    def forget_assessments(self) -> None:
        """Drop memoised window assessments (they are only valid for the counts they were read from)."""
        self._assessed.clear()

    def restore(self, records: Iterable[tuple[str, bytes]]) -> None:
        self.forget_assessments()
        for key, value in records:
            kind, _, rest = key.partition("|")
            if kind == "b":
                grid_id, _, start = rest.rpartition("|")
                self.buckets.setdefault(grid_id, {})[int(start)] = Bucket.from_bytes(value)
            elif kind == "r":
                self.risks[rest] = GridRisk.from_bytes(value)
            elif kind == "wm":
                self.watermark_ms, self.evaluated_bucket, self.done_offset = orjson.loads(value)

    def checkpoint(
        self,
        buckets: Iterable[tuple[str, int]],
        risks: Iterable[str],
        expired: Iterable[tuple[str, int]] = (),
        forgotten: Iterable[str] = (),
    ) -> Iterator[tuple[str, bytes | None]]:
        """Records of one batch, in the order they must reach the changelog.

        Updates first, then the watermark (with ``done_offset``), then deletions. The changelog keeps
        order within a partition, so whatever survives a crash is a prefix: a restored watermark implies its
        updates were restored, and no deletion is restored without the watermark that justified it.
        """
        for grid_id, start in buckets:
            bucket = self.buckets.get(grid_id, {}).get(start)
            if bucket is not None:
                yield f"b|{grid_id}|{start}", bucket.to_bytes()
        for grid_id in risks:
            risk = self.risks.get(grid_id)
            if risk is not None:
                yield f"r|{grid_id}", risk.to_bytes()
        yield "wm", orjson.dumps([self.watermark_ms, self.evaluated_bucket, self.done_offset])
        for grid_id, start in expired:
            yield f"b|{grid_id}|{start}", None
        for grid_id in forgotten:
            yield f"r|{grid_id}", None
