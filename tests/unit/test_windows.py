"""Window assignment, lateness, expiry and the checkpoint format, with exact expected values."""

from __future__ import annotations

import orjson
import pytest

from pingan.index.levels import Level
from pingan.streams.windows import Bucket, GridRisk, Outcome, PartitionState, WindowSpec

SPEC = WindowSpec(bucket_seconds=300, hop_seconds=3600, allowed_lateness_seconds=120)
T0 = 1_700_000_100  # 2023-11-14T22:15:00Z, a bucket boundary
KEY = ("call110", "criminal", 3)


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def test_bucket_start_and_hop_buckets() -> None:
    assert T0 % 300 == 0
    assert SPEC.bucket_start(T0) == T0
    assert SPEC.bucket_start(T0 + 299.999) == T0
    assert SPEC.bucket_start(T0 + 300) == T0 + 300
    hop = SPEC.hop_buckets(T0)
    assert len(hop) == 12
    assert (hop[0], hop[-1]) == (T0 - 3300, T0)


def test_hop_must_be_whole_buckets() -> None:
    with pytest.raises(ValueError, match="whole number of buckets"):
        WindowSpec(bucket_seconds=300, hop_seconds=1000)


def test_lateness_is_measured_from_the_window_end() -> None:
    # bucket [T0, T0+300) closes when the watermark reaches T0 + 300 + 120
    assert not SPEC.is_late(T0, ms(T0 + 419.999))
    assert SPEC.is_late(T0, ms(T0 + 420))


def test_expiry_waits_until_every_window_reading_the_bucket_is_closed() -> None:
    # the last window whose hour includes T0 starts at T0 + 3300 and closes at T0 + 3600 + 120
    assert not SPEC.is_expired(T0, ms(T0 + 3719.999))
    assert SPEC.is_expired(T0, ms(T0 + 3720))


def test_apply_counts_skips_replays_and_flags_late_events() -> None:
    state = PartitionState(SPEC)
    assert state.apply("G1", ms(T0 + 10), KEY, 0, "a") == (Outcome.APPLIED, T0)
    assert state.apply("G1", ms(T0 + 20), KEY, 1, "b") == (Outcome.APPLIED, T0)
    assert state.buckets["G1"][T0].counts == {KEY: 2}
    assert state.buckets["G1"][T0].applied_position == 1
    # a redelivered offset is already in the bucket
    assert state.apply("G1", ms(T0 + 10), KEY, 0, "a") == (Outcome.REPLAYED, T0)
    # a new message carrying an event id already counted (a producer retry) is not counted again
    assert state.apply("G1", ms(T0 + 10), KEY, 2, "a") == (Outcome.DUPLICATE, T0)
    assert state.buckets["G1"][T0].counts == {KEY: 2}
    # the watermark is the partition's max event time, whichever grid carried it
    assert state.apply("G2", ms(T0 + 1000), KEY, 3, "c") == (Outcome.APPLIED, T0 + 900)
    assert state.watermark_ms == ms(T0 + 1000)
    # G1's first bucket closed at T0 + 420 < watermark: a straggler for it is late and changes nothing
    assert state.apply("G1", ms(T0 + 30), KEY, 4, "d") == (Outcome.LATE, T0)
    assert state.buckets["G1"][T0].counts == {KEY: 2}
    # an out-of-order event inside the lateness allowance still counts
    assert state.apply("G1", ms(T0 + 800), KEY, 5, "e") == (Outcome.APPLIED, T0 + 600)


def test_hop_counts_sum_the_buckets_of_the_hour() -> None:
    state = PartitionState(SPEC)
    for offset, minutes in enumerate((0, 4, 6, 59, 61)):
        state.apply("G1", ms(T0 + minutes * 60), KEY, offset, f"m{minutes}")
    # hop ending in bucket T0+3300 covers [T0, T0+3600): minutes 0, 4, 6, 59
    assert state.hop_counts("G1", T0 + 3300) == {KEY: 4}
    # hop ending in bucket T0+3600 covers [T0+300, T0+3900): minutes 6, 59, 61
    assert state.hop_counts("G1", T0 + 3600) == {KEY: 3}
    assert state.hop_counts("nowhere", T0) == {}


def test_expire_drops_old_buckets_and_empty_grids() -> None:
    state = PartitionState(SPEC)
    state.apply("G1", ms(T0), KEY, 0, "a")
    state.apply("G2", ms(T0 + 3000), KEY, 1, "b")
    assert state.expire() == []
    state.apply("G2", ms(T0 + 3700), KEY, 2, "c")
    assert state.expire() == []  # the window [T0+3300, T0+3600) still reads T0 and is open until T0+3720
    state.apply("G2", ms(T0 + 3720), KEY, 3, "d")
    assert state.expire() == [("G1", T0)]
    assert "G1" not in state.buckets
    assert set(state.buckets["G2"]) == {T0 + 3000, T0 + 3600}


def _changelog(*batches: list[tuple[str, bytes | None]]) -> dict[str, bytes]:
    """What a compacted changelog (and Faust's table) holds after these records: the last value per key."""
    table: dict[str, bytes] = {}
    for records in batches:
        for key, value in records:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    return table


def test_checkpoint_round_trip_restores_the_same_state() -> None:
    state = PartitionState(SPEC)
    state.apply("G1", ms(T0 + 1), KEY, 7, "a")
    state.apply("G1", ms(T0 + 2), ("camera", "fight", 4), 8, "b")
    state.set_risk("G1", GridRisk(83.3, Level.YELLOW, ms(T0 + 2), "camera", 2, 83.3))
    state.scored_ms = ms(T0 + 1)
    state.done_offset = 8
    records = list(state.checkpoint())
    # records keyed with the batch (its last offset), then the watermark with pending grids
    assert [key for key, _ in records] == [f"b|G1|{T0}|8", "r|G1|8", "wm"]
    restored = PartitionState(SPEC)
    restored.restore(_changelog(records).items())
    assert restored.buckets == state.buckets
    assert restored.risks == state.risks
    assert (restored.watermark_ms, restored.scored_ms, restored.done_offset) == (ms(T0 + 2), ms(T0 + 1), 8)
    assert restored.pending == {"G1"} and restored.garbage == []


def test_a_restore_ignores_the_records_of_a_batch_that_did_not_finish() -> None:
    """Batch 1 (offset 7) completes; batch 2 (offset 9) writes a part of its records and crashes before its
    watermark record: the restored state is batch 1's, exactly, and batch 2's records are deleted first thing."""
    state = PartitionState(SPEC)
    state.apply("G1", ms(T0 + 1), KEY, 7, "a")
    state.set_risk("G1", GridRisk(50.0, Level.YELLOW, ms(T0 + 1), "call110", 1, 50.0))
    state.done_offset = 7
    first = list(state.checkpoint())
    state.apply("G1", ms(T0 + 2), KEY, 8, "b")
    state.apply("G2", ms(T0 + 3), KEY, 9, "c")
    state.set_risk("G1", None)
    state.done_offset = 9
    second = list(state.checkpoint())
    assert [key for key, _ in second] == [f"b|G1|{T0}|9", f"b|G2|{T0}|9", "r|G1|9", "wm", f"b|G1|{T0}|7", "r|G1|7",
                                          "r|G1|9"]  # fmt: skip
    for persisted in range(4):  # a crash after 0..3 records of the second batch, before its watermark record
        restored = PartitionState(SPEC)
        restored.restore(_changelog(first, second[:persisted]).items())
        assert set(restored.buckets) == {"G1"} and restored.buckets["G1"][T0].counts == {KEY: 1}
        assert restored.risks["G1"].level is Level.YELLOW and restored.done_offset == 7
        assert sorted(restored.garbage) == sorted(key for key, _ in second[:persisted])
    # the watermark record made it: the second batch is what counts, even if its deletions did not
    for persisted in range(4, len(second) + 1):
        restored = PartitionState(SPEC)
        restored.restore(_changelog(first, second[:persisted]).items())
        assert restored.buckets["G1"][T0].counts == {KEY: 2} and set(restored.buckets) == {"G1", "G2"}
        assert "G1" not in restored.risks and restored.done_offset == 9


def test_scoring_times_are_the_ends_of_the_steps_left_and_the_changes_across_a_gap() -> None:
    spec = WindowSpec(300, 3600, 120, step_seconds=10)
    t0 = ms(T0)
    # within one step: nothing; into the next step: the end of the watermark's step
    assert list(spec.scoring_times(t0 + 1000, t0 + 9000)) == []
    assert list(spec.scoring_times(t0 + 1000, t0 + 10_000)) == [t0 + 9999]
    # across 12 minutes: the watermark's step, then each step that starts a bucket (5, 10 min) or ends a
    # bucket's lateness allowance (2, 7 min), up to the step before the event's (the one ending at 12:00; the
    # change at 12:00 is the event's own step, scored when a later event leaves it)
    times = spec.scoring_times(t0 + 1000, t0 + 12 * 60_000 + 5000)
    assert [(t - t0 + 1) // 1000 for t in times] == [10, 130, 310, 430, 610]
    with pytest.raises(ValueError, match="step"):
        WindowSpec(300, 3600, 120, step_seconds=7)


def test_bucket_serialisation_keeps_severity_as_int() -> None:
    bucket = Bucket({("call110", "fire", 5): 3}, 42, {1, 2**62})
    again = Bucket.from_bytes(bucket.to_bytes())
    assert again == bucket
    assert again.events == 3


def test_a_log_that_began_again_keeps_the_counts_and_rewrites_the_checkpoint() -> None:
    state = PartitionState(SPEC)
    state.apply("G1", ms(T0 + 1), KEY, 7000, "a")
    state.set_risk("G1", GridRisk(50.0, Level.YELLOW, ms(T0 + 1), "call110", 1, 50.0))
    state.done_offset = 7000
    list(state.checkpoint())
    state.restart_log()
    assert state.done_offset == -1 and state.buckets["G1"][T0].counts == {KEY: 1}
    # offset 0 of the new log is a new record, counted; the old event again (a producer resending) is not
    assert state.apply("G1", ms(T0 + 2), KEY, 0, "b")[0] == "applied"
    assert state.apply("G1", ms(T0 + 3), KEY, 1, "a")[0] == "duplicate"
    state.done_offset = 1
    keys = [key for key, _ in state.checkpoint()]
    assert keys[:3] == [f"b|G1|{T0}|1", "r|G1|1", "wm"]  # everything, again, for the new changelog


def test_a_changelog_of_the_older_format_is_not_trusted_and_is_deleted() -> None:
    """Records written before they carried their batch (b|grid|start, r|grid, a 3-item watermark)."""
    risk = GridRisk(50.0, Level.YELLOW, 0, "", 2, 50.0)
    old = [(f"b|G1|{T0}", Bucket({KEY: 2}, 7).to_bytes()), ("r|G1", risk.to_bytes()),
           ("wm", orjson.dumps([ms(T0 + 1), T0, 7]))]  # fmt: skip
    restored = PartitionState(SPEC)
    restored.restore(old)
    assert (restored.buckets, restored.risks, restored.done_offset) == ({}, {}, -1)
    assert sorted(restored.garbage) == sorted(key for key, _ in old)
    assert [key for key, value in restored.checkpoint() if value is None][:3] == [key for key, _ in old]
