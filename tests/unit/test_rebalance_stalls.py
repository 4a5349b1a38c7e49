"""Stalls read off a sampled timeline of stored rows per partition (tests/support/multi_worker.stalls)."""

from __future__ import annotations

from tests.support.multi_worker import Stall, progress_times, stalls


def _timeline(progress: dict[int, list[int]], until: int) -> list[tuple[float, dict[int, int]]]:
    """One sample a second; a partition's count grows by one at each of its progress times."""
    return [(float(t), {p: sum(1 for x in times if x <= t) for p, times in progress.items()}) for t in range(until + 1)]


PROGRESS = {0: [0, 1, 2, 3, 9, 10], 1: [0, 1, 2, 3, 4, 8, 9, 10]}


def test_progress_times_are_the_samples_where_a_count_grew() -> None:
    assert progress_times(_timeline(PROGRESS, 10)) == {p: [float(t) for t in ts] for p, ts in PROGRESS.items()}


def test_a_stall_belongs_to_the_latest_change_before_it_ended() -> None:
    # Both partitions stop after the join (1 from 4 to 8); partition 0 stops at 3 and resumes only at 9,
    # after the kill at 8.5: that gap spans the kill, so the kill caused it.
    assert stalls(_timeline(PROGRESS, 10), [("join", 2.5), ("SIGKILL", 8.5)]) == [
        Stall("join", 2.5, all_partitions_s=4.0, one_partition_s=4.0, until_all_flowing_s=5.5),
        Stall("SIGKILL", 8.5, all_partitions_s=1.0, one_partition_s=6.0, until_all_flowing_s=0.5),
    ]


def test_gaps_before_the_first_change_are_about_no_change() -> None:
    assert stalls(_timeline({0: [0, 5, 6, 7]}, 7), [("join", 6.5)]) == [
        Stall("join", 6.5, all_partitions_s=1.0, one_partition_s=1.0, until_all_flowing_s=0.5)
    ]
