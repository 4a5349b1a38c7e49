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
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import orjson

from pingan.index.baseline import BaselineModel
from pingan.index.levels import Level
from pingan.index.records import Hold
from pingan.index.scoring import Assessment, Expectations, IndexConfig, assess, shown_level
from pingan.settings import Settings

log = logging.getLogger(__name__)

CountKey = tuple[str, str, int]  # (source, type, severity)


@dataclass(frozen=True)
class WindowSpec:
    bucket_seconds: int = 300
    hop_seconds: int = 3600
    allowed_lateness_seconds: int = 120
    # Closed windows the hysteresis looks back over; their hours need their buckets kept that much longer.
    held_windows: int = 0
    # Risk is scored at the end of every step of event time the watermark passes (see scoring_times).
    step_seconds: int = 10

    def __post_init__(self) -> None:
        if self.hop_seconds % self.bucket_seconds:
            raise ValueError("the hopping window must be a whole number of buckets")
        if self.step_seconds <= 0 or self.bucket_seconds % self.step_seconds:
            raise ValueError("the scoring step must divide the bucket")
        if self.allowed_lateness_seconds % self.step_seconds:
            raise ValueError("the scoring step must divide the allowed lateness")
        if self.step_seconds > self.hop_seconds - self.bucket_seconds and self.hop_seconds > self.bucket_seconds:
            raise ValueError("the scoring step must be at most the hopping window less one bucket")

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
        return bucket_start <= self.expired_through(watermark_ms)

    @property
    def kept_seconds(self) -> int:
        """How long a bucket is kept after its start: until the last window whose hour includes it (or that
        hysteresis holds) has closed."""
        return self.hop_seconds + self.allowed_lateness_seconds + self.held_windows * self.bucket_seconds

    def expired_through(self, watermark_ms: int) -> int:
        """The start of the newest bucket expired at ``watermark_ms`` (see :meth:`is_expired`)."""
        return self.bucket_start(watermark_ms / 1000 - self.kept_seconds)

    def last_closed_bucket(self, watermark_ms: int) -> int:
        """Start of the newest bucket that is closed (its lateness allowance has passed)."""
        return self.bucket_start(watermark_ms / 1000 - self.bucket_seconds - self.allowed_lateness_seconds)

    def scoring_times(self, watermark_ms: int, event_ms: int) -> Iterator[int]:
        """When (ms) the state is scored before an event at ``event_ms`` is applied, oldest first.

        Risk is a function of the events, not of how they were batched: it is scored at the last millisecond of
        each step the watermark leaves, with every event applied before the one that leaves it. First the
        watermark's own step; then, across a gap in the stream, each later step in which the live hour or the
        closed windows change (a bucket starts, or a bucket's lateness allowance ends), so decay and
        hysteresis play out exactly as they would have with events in every step. Nothing when the event is
        in the watermark's step. The caller stops early once no grid has state.
        """
        step = self.step_seconds * 1000
        first_end = (watermark_ms // step + 1) * step
        last_end = (event_ms // step) * step  # the end of the step before the event's
        if first_end > last_end:
            return
        yield first_end - 1
        size = self.bucket_seconds * 1000
        late = self.allowed_lateness_seconds * 1000 % size
        base = first_end // size * size
        while True:
            for change in sorted({base, base + late}):
                end = change + step  # the first step that ends after the change
                if end <= first_end:
                    continue
                if end > last_end:
                    return
                yield end - 1
            base += size


def window_spec(settings: Settings, index: IndexConfig) -> WindowSpec:
    """The worker's windows: the sizes in the settings, with buckets kept for the index's hysteresis."""
    return WindowSpec(
        settings.window_seconds, settings.hop_window_seconds, settings.allowed_lateness_seconds,
        index.quiet_windows, settings.score_step_seconds,
    )  # fmt: skip


@dataclass(slots=True)
class Bucket:
    counts: dict[CountKey, int] = field(default_factory=dict)
    applied_position: int = -1
    # Hashes of the event ids counted, so a second message with the same id (a producer retry) counts once.
    # Capped: past MAX_TRACKED_IDS events a bucket still counts exactly on replay (offsets), not on retries.
    seen: set[int] = field(default_factory=set)
    # The batch (its last input offset) whose checkpoint record holds this bucket; -1: not in the changelog.
    version: int = -1

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    def to_bytes(self) -> bytes:
        counts = [[s, t, v, n] for (s, t, v), n in self.counts.items()]
        return orjson.dumps({"o": self.applied_position, "c": counts, "s": sorted(self.seen)})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Bucket:
        doc = orjson.loads(raw)
        return cls({(s, t, v): n for s, t, v, n in doc["c"]}, doc["o"], set(doc.get("s", ())))


# How far a grid's score (on the index's 0-200 scale, a colour every 50) must move from the last logged value
# to be logged again with the same colour and dominant source: five rows per colour band at most.
LOG_SCORE_STEP = 10.0


@dataclass(frozen=True, slots=True)
class GridRisk:
    """A grid's decided risk, and the score of the last one written to the ``risk_updates`` log (equal to
    ``score`` when this one was logged; colour and dominant source always equal the logged ones)."""

    score: float
    level: Level
    as_of_ms: int
    dominant_source: str
    window_events: int
    logged_score: float

    def same_values(self, other: GridRisk) -> bool:
        """Equal apart from when it was computed."""
        return (self.score, self.level, self.dominant_source, self.window_events) == (
            other.score, other.level, other.dominant_source, other.window_events,
        )  # fmt: skip

    def worth_logging_after(self, previous: GridRisk) -> bool:
        """Whether this decided risk goes to the ``risk_updates`` log, following ``previous``: a new colour or
        dominant source, or a score at least :data:`LOG_SCORE_STEP` from the last one logged. Smaller moves
        (a window gaining or losing an event) still reach the map, but not the log: logging every one made
        the log about one row per event, and publishing it took 90 % of the worker's time."""
        return (
            self.level != previous.level
            or self.dominant_source != previous.dominant_source
            or abs(self.score - previous.logged_score) >= LOG_SCORE_STEP
        )

    def logged_as(self, logged_score: float) -> GridRisk:
        """The same risk, with the score of the last logged one (when this one is not logged)."""
        return GridRisk(self.score, self.level, self.as_of_ms, self.dominant_source, self.window_events, logged_score)

    def to_bytes(self) -> bytes:
        return orjson.dumps([
            self.score, self.level.value, self.as_of_ms, self.dominant_source, self.window_events, self.logged_score,
        ])  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes) -> GridRisk:
        score, level, as_of_ms, dominant, events, *logged = orjson.loads(raw)
        # A checkpoint from before logged_score: that risk was logged as it is.
        return cls(score, Level(level), as_of_ms, dominant, events, logged[0] if logged else score)


GREEN = GridRisk(0.0, Level.GREEN, 0, "", 0, 0.0)


MAX_TRACKED_IDS = 5000


def id_hash(event_id: str) -> int:
    """A stable 63-bit hash (Python's hash() changes between processes)."""
    return record_fingerprint(event_id.encode())


def record_fingerprint(value: bytes) -> int:
    """A stable 63-bit hash of bytes (an event id, a record's value)."""
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "big") >> 1


class Outcome(StrEnum):
    APPLIED = "applied"
    REPLAYED = "replayed"  # already in the bucket before a restart: skipped
    DUPLICATE = "duplicate"  # another message with an event id already counted: skipped
    LATE = "late"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A grid at one moment: the live hour, the colour shown, and what holds it if hysteresis does."""

    live: Assessment
    shown: Level
    hold: Hold | None


@dataclass
class PartitionState:
    """Open buckets, last scored risk per grid, and the watermark of one input partition."""

    spec: WindowSpec
    buckets: dict[str, dict[int, Bucket]] = field(default_factory=dict)
    risks: dict[str, GridRisk] = field(default_factory=dict)
    watermark_ms: int = 0
    # The moment (ms) of the last scoring step; -1 before the first.
    scored_ms: int = -1
    # The last input offset whose batch is fully written (ClickHouse, topics, checkpoint): on a replay after
    # a restart, records at or below it are already done and are skipped outright.
    done_offset: int = -1
    # A hash of the record at done_offset: at an assignment, a log whose record there differs (or is missing)
    # is not the log the checkpoint was made from (see pingan.streams.app.rewinding_consumer). 0: not known.
    done_fingerprint: int = 0
    # Grids with events applied since the last scoring step, and those of them whose provisional (end of
    # batch) risk was published: the next step scores them and re-asserts what it decides.
    pending: set[str] = field(default_factory=set)
    provisional: set[str] = field(default_factory=set)
    # Changelog bookkeeping (see checkpoint): the batch whose record holds each risk; keys to delete.
    risk_versions: dict[str, int] = field(default_factory=dict)
    garbage: list[str] = field(default_factory=list)
    # Changes since the last checkpoint / the last window rows.
    touched: set[tuple[str, int]] = field(default_factory=set)
    dirty_risks: set[str] = field(default_factory=set)
    expired: list[tuple[str, int, int]] = field(default_factory=list)  # (grid, bucket start, record version)
    unrowed: set[tuple[str, int]] = field(default_factory=set)
    rows_bucket: int = -1  # the current bucket when window rows were last emitted
    # Assessments of hopping windows per grid and window end (a window is read for its row, the live level and
    # hysteresis, at many steps and in many batches), for one index config and baseline (see score_with). An
    # event drops those of the windows whose hour holds its bucket, so an entry never outlives the counts it
    # was read from; when buckets expire, those of windows no judgement reads any more go too.
    _assessed: dict[str, dict[int, Assessment]] = field(default_factory=dict, repr=False, compare=False)
    # The same memo for the summed counts of a window's buckets before its last (the live window is
    # read at every step while only its last bucket changes), dropped by an event in any of them. (What the
    # baseline expects of a window is remembered by the baseline itself.)
    _earlier: dict[str, dict[int, dict[CountKey, int]]] = field(default_factory=dict, repr=False, compare=False)
    # The index config and baseline the memos above were computed with.
    _memo_for: tuple[object, object] | None = field(default=None, repr=False, compare=False)
    # Buckets starting at or before this were dropped by the last expire(): until the threshold moves, nothing
    # else can have expired (a bucket that old is late: no event creates it again).
    _expired_through: int | None = field(default=None, repr=False, compare=False)

    # --- applying events -------------------------------------------------------------------------------
    def apply(self, grid_id: str, event_ms: int, key: CountKey, position: int, event_id: str) -> tuple[str, int]:
        """Add one event; return (outcome, bucket start). Events must come in order of position (the record's
        offset, then the envelope's index in a batch record: pingan.streams.pipeline.ITEM_SLOTS)."""
        start = self.spec.bucket_start(event_ms / 1000)
        if self.spec.is_late(start, self.watermark_ms):
            return Outcome.LATE, start
        # The watermark moves on replays too: it must be what it was when the event was first applied.
        if event_ms > self.watermark_ms:
            self.watermark_ms = event_ms
        bucket = self.buckets.setdefault(grid_id, {}).setdefault(start, Bucket())
        if position <= bucket.applied_position:
            return Outcome.REPLAYED, start
        bucket.applied_position = position
        digest = id_hash(event_id)
        if digest in bucket.seen:
            return Outcome.DUPLICATE, start
        if len(bucket.seen) < MAX_TRACKED_IDS:
            bucket.seen.add(digest)
        bucket.counts[key] = bucket.counts.get(key, 0) + 1
        hop = self.spec.hop_seconds
        assessed = self._assessed.get(grid_id)
        if assessed:
            for end in [end for end in assessed if start <= end < start + hop]:
                del assessed[end]
        earlier = self._earlier.get(grid_id)
        if earlier:
            for end in [end for end in earlier if start < end < start + hop]:
                del earlier[end]
        self.pending.add(grid_id)
        self.touched.add((grid_id, start))
        self.unrowed.add((grid_id, start))
        return Outcome.APPLIED, start

    @property
    def empty(self) -> bool:
        return not self.buckets and not self.risks

    # --- reading windows -------------------------------------------------------------------------------
    def hop_counts(self, grid_id: str, end_bucket_start: int) -> dict[CountKey, int]:
        grid_buckets = self.buckets.get(grid_id, {})
        earlier = self._earlier.setdefault(grid_id, {})
        before_last = earlier.get(end_bucket_start)
        if before_last is None:
            before_last = earlier[end_bucket_start] = self._slid(grid_buckets, earlier, end_bucket_start)
        total = dict(before_last)
        last = grid_buckets.get(end_bucket_start)
        if last is not None:
            for key, n in last.counts.items():
                total[key] = total.get(key, 0) + n
        return total

    def _slid(
        self, grid_buckets: dict[int, Bucket], earlier: dict[int, dict[CountKey, int]], end_bucket_start: int
    ) -> dict[CountKey, int]:
        """The summed counts of the buckets before the window's last: from the window one bucket earlier when it
        is remembered (one bucket in, one out, instead of the hour's eleven), else from the buckets."""
        size, hop = self.spec.bucket_seconds, self.spec.hop_seconds
        previous = earlier.get(end_bucket_start - size)
        leaving = end_bucket_start - hop
        # The bucket leaving must still be here to be taken out, unless it never was (it is newer than expiry).
        if previous is not None and (leaving in grid_buckets or self._expired_through is None
                                     or leaving > self._expired_through):  # fmt: skip
            summed = dict(previous)
            entering = grid_buckets.get(end_bucket_start - size)
            if entering is not None:
                for key, n in entering.counts.items():
                    summed[key] = summed.get(key, 0) + n
            gone = grid_buckets.get(leaving)
            if gone is not None:
                for key, n in gone.counts.items():
                    left = summed[key] - n
                    if left:
                        summed[key] = left
                    else:
                        del summed[key]
            return summed
        summed = {}
        for start in self.spec.hop_buckets(end_bucket_start)[:-1]:
            bucket = grid_buckets.get(start)
            if bucket is not None:
                for key, n in bucket.counts.items():
                    summed[key] = summed.get(key, 0) + n
        return summed

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
        assessed = self._assessed.setdefault(grid_id, {})
        cached = assessed.get(end_bucket_start)
        if cached is not None:
            return cached
        counts = self.hop_counts(grid_id, end_bucket_start)
        if baseline is None:
            assessment = assess(counts, config)
        else:
            sources = {source for source, _, _ in counts}
            assessment = assess(counts, config, self.expectations(grid_id, end_bucket_start, sources, baseline))
        assessed[end_bucket_start] = assessment
        return assessment

    def judge(
        self, grid_id: str, config: IndexConfig, baseline: BaselineModel | None = None, *, at_ms: int | None = None
    ) -> Judgement:
        """The grid at ``at_ms`` (default: the watermark): the hour ending then, and the colour after hysteresis."""
        at_ms = self.watermark_ms if at_ms is None else at_ms
        spec = self.spec
        live = self.assess_hop(grid_id, self.bucket_at(at_ms), config, baseline)
        last_closed = spec.last_closed_bucket(at_ms)
        size = spec.bucket_seconds
        closed = [
            (last_closed - i * size, self.assess_hop(grid_id, last_closed - i * size, config, baseline))
            for i in range(config.quiet_windows)
        ]
        shown = shown_level(live.level, [assessment.level for _, assessment in closed])
        hold = None
        if shown is not live.level:
            start, holder = max((item for item in closed if item[1].level is shown), key=lambda item: item[0])
            # The colour lasts while a window at its level is among those looked back over: the last such
            # window, closed or still closing (before the live one), leaves them when the window quiet_windows
            # buckets after it closes. Later windows are lower now; new events may of course raise them.
            current = self.bucket_at(at_ms)
            closing = range(last_closed + size, current, size)
            last = max(
                (end for end in closing if self.assess_hop(grid_id, end, config, baseline).level.rank >= shown.rank),
                default=start,
            )
            steps_down_at = last + (config.quiet_windows + 1) * size + spec.allowed_lateness_seconds
            hold = Hold(start + size - spec.hop_seconds, start + size, holder.score, holder.level, steps_down_at)
        return Judgement(live, shown, hold)

    def assess_grid(
        self, grid_id: str, config: IndexConfig, baseline: BaselineModel | None = None
    ) -> tuple[Assessment, Level]:
        """The live assessment (the hour ending at the watermark) and the level to show after hysteresis."""
        judgement = self.judge(grid_id, config, baseline)
        return judgement.live, judgement.shown

    def bucket_at(self, at_ms: int) -> int:
        return self.spec.bucket_start(at_ms / 1000)

    def scoring_key(self, at_ms: int) -> tuple[int, int]:
        """What every grid's colour depends on besides its own events: the live hour and the closed windows."""
        return self.bucket_at(at_ms), self.spec.last_closed_bucket(at_ms)

    def grids_to_score(self, at_ms: int) -> set[str]:
        """Grids whose colour may have changed since the last step: those with new events, and every grid
        with state when the live hour or the closed windows moved on (decay)."""
        grids = self.pending | self.provisional
        if self.scored_ms < 0 or self.scoring_key(at_ms) != self.scoring_key(self.scored_ms):
            grids |= set(self.buckets) | set(self.risks)
        return grids

    def set_risk(self, grid_id: str, risk: GridRisk | None) -> None:
        if risk is None:
            self.risks.pop(grid_id, None)
        else:
            self.risks[grid_id] = risk
        self.dirty_risks.add(grid_id)

    def expire(self, at_ms: int | None = None) -> list[tuple[str, int]]:
        """Drop buckets no live window needs at ``at_ms`` (default: the watermark); return their keys."""
        at_ms = self.watermark_ms if at_ms is None else at_ms
        through = self.spec.expired_through(at_ms)
        if through == self._expired_through:
            return []
        self._expired_through = through
        self._forget_unreadable(at_ms)
        expired = []
        for grid_id, grid_buckets in list(self.buckets.items()):
            for start in [s for s in grid_buckets if self.spec.is_expired(s, at_ms)]:
                bucket = grid_buckets.pop(start)
                self.expired.append((grid_id, start, bucket.version))
                expired.append((grid_id, start))
            if not grid_buckets:
                del self.buckets[grid_id]
        return expired

    def restart_log(self) -> None:
        """The input log began again at offset 0 (a broker that lost it): offsets of the old log mean nothing
        now. Counts stay (duplicates are told by event id from here on), and every bucket and risk is written
        to the changelog at the next checkpoint, which may have lost its log too."""
        self.done_offset = -1
        self.done_fingerprint = 0
        for grid_id, grid_buckets in self.buckets.items():
            for start, bucket in grid_buckets.items():
                bucket.applied_position = -1
                self.touched.add((grid_id, start))
        self.dirty_risks |= set(self.risks)

    def _forget_unreadable(self, at_ms: int) -> None:
        """Drop the memos of windows no judgement reads any more (older than the oldest closed window looked back
        over): they would only fill memory, and a window whose first bucket expired may no longer be summed."""
        # The oldest window judge() reads ends quiet_windows - 1 buckets before the last closed one (the windows
        # a live one slides from are newer).
        looked_back = max(self.spec.held_windows - 1, 0) * self.spec.bucket_seconds
        oldest = self.spec.last_closed_bucket(at_ms) - looked_back
        for memo in (self._assessed, self._earlier):
            for grid_id in list(memo):
                ends = memo[grid_id]
                for end in [end for end in ends if end < oldest]:
                    del ends[end]
                if not ends:
                    del memo[grid_id]

    def score_with(self, config: IndexConfig, baseline: BaselineModel | None) -> None:
        """Keep the memoised assessments if they were made with this config and baseline, else drop them."""
        if self._memo_for is None or self._memo_for[0] is not config or self._memo_for[1] is not baseline:
            self.forget_assessments()
            self._memo_for = (config, baseline)

    def forget_assessments(self) -> None:
        """Drop memoised window assessments (they are only valid for the counts they were read from)."""
        self._assessed.clear()
        self._earlier.clear()

    # --- checkpoint records (key, value or None for a deletion) ----------------------------------------
    def restore(self, records: Iterable[tuple[str, bytes]]) -> None:
        """Rebuild the state from the changelog's records (what a restarted worker reads back).

        Records carry the batch that wrote them (its last input offset). Only those of batches up to the
        restored watermark's ``done_offset`` count: a batch that crashed while writing its checkpoint left a
        part of its records, and they describe events that will be processed again. Those, and versions a
        later record supersedes, are deleted by the next checkpoint.
        """
        self.forget_assessments()
        versions: dict[tuple[str, str], list[tuple[int, str, bytes]]] = {}
        keys: list[str] = []
        legacy = False
        for key, value in records:
            keys.append(key)
            kind, _, rest = key.partition("|")
            if kind == "wm":
                document = orjson.loads(value)
                if len(document) < 5:
                    legacy = True
                    continue
                self.watermark_ms, self.scored_ms, self.done_offset = document[:3]
                self.pending, self.provisional = set(document[3]), set(document[4])
                self.done_fingerprint = document[5] if len(document) > 5 else 0
            elif kind in ("b", "r"):
                name, _, version = rest.rpartition("|")
                if not version.isdigit() or (kind == "b" and not name.rpartition("|")[2].isdigit()):
                    legacy = True
                    continue
                versions.setdefault((kind, name), []).append((int(version), key, value))
        if legacy:
            # A changelog written before records carried their batch (an upgrade): it cannot tell a finished
            # batch from an unfinished one, so it is not trusted. The partition starts empty from the committed
            # offset (the open hour's counts are missing until it passes) and the old records are deleted.
            log.warning("the changelog holds records of an older format: starting this partition's state afresh")
            vars(self).update(vars(PartitionState(self.spec)))
            self.garbage = keys
            return
        for (kind, name), candidates in versions.items():
            candidates.sort()
            done = [c for c in candidates if c[0] <= self.done_offset]
            best = done[-1] if done else None
            # The chosen record last: deleting it first could bring an older one back after a crash.
            self.garbage.extend(key for _, key, _ in (c for c in candidates if c is not best))
            if best is None:
                continue
            version, key, value = best
            if kind == "b":
                grid_id, _, start = name.rpartition("|")
                bucket = Bucket.from_bytes(value)
                bucket.version = version
                self.buckets.setdefault(grid_id, {})[int(start)] = bucket
            elif value:
                self.risks[name] = GridRisk.from_bytes(value)
                self.risk_versions[name] = version
            else:
                self.garbage.append(key)  # a grid forgotten: the marker has done its work once nothing is older

    def checkpoint(self) -> Iterator[tuple[str, bytes | None]]:
        """The changelog records of the batch just processed, in the order they must be written.

        1. deletions of records restored from an unfinished batch or superseded; then one record per bucket
           and risk that changed, each keyed with this batch (its last input offset), so a record never
           overwrites the one a restore would need if this batch does not finish;
        2. the watermark record with ``done_offset``: the batch is done once it is in the changelog;
        3. deletions of what this batch expired, forgot or superseded.
        The changelog keeps order within a partition, so whatever survives a crash is a prefix of this.
        """
        version = self.done_offset
        for key in self.garbage:
            yield key, None
        self.garbage.clear()
        after: list[str] = []
        for grid_id, start in sorted(self.touched):
            bucket = self.buckets.get(grid_id, {}).get(start)
            if bucket is None:
                continue  # expired within the batch
            yield f"b|{grid_id}|{start}|{version}", bucket.to_bytes()
            if bucket.version >= 0 and bucket.version != version:
                after.append(f"b|{grid_id}|{start}|{bucket.version}")
            bucket.version = version
        for grid_id in sorted(self.dirty_risks):
            risk = self.risks.get(grid_id)
            old = self.risk_versions.pop(grid_id, None)
            if risk is not None:
                yield f"r|{grid_id}|{version}", risk.to_bytes()
                self.risk_versions[grid_id] = version
                if old is not None and old != version:
                    after.append(f"r|{grid_id}|{old}")
            elif old is not None:
                yield f"r|{grid_id}|{version}", b""  # forgotten: newer than the record it replaces
                if old != version:
                    after.append(f"r|{grid_id}|{old}")
                after.append(f"r|{grid_id}|{version}")
        yield "wm", orjson.dumps(
            [self.watermark_ms, self.scored_ms, self.done_offset, sorted(self.pending), sorted(self.provisional),
             self.done_fingerprint]
        )  # fmt: skip
        for grid_id, start, record_version in self.expired:
            if record_version >= 0:
                yield f"b|{grid_id}|{start}|{record_version}", None
        yield from ((key, None) for key in after)
        self.touched.clear()
        self.dirty_risks.clear()
        self.expired.clear()
