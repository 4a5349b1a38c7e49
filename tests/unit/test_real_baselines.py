"""The simple baselines of the real-data evaluation (bench/real_baselines.py) and the docs writer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import real_baselines as rb
from bench.docs_sections import replace_section
from pingan.index.baseline import hour_of_week
from pingan.index.surprise import poisson_surprise

T0 = 1_577_836_800  # 2020-01-01 00:00 UTC, a bucket and hour boundary


def test_windows_count_each_event_in_the_twelve_hour_long_windows_it_belongs_to() -> None:
    grid = np.array([0, 0, 1])
    times = np.array([T0 + 10.0, T0 + 310.0, T0 + 20.0])
    windows = rb.Windows.of(grid, times, np.array([3.0, 2.0, 1.0]))
    b0 = T0 // 300
    rows = zip(windows.grid, windows.end_bucket, windows.count, windows.weighted, strict=True)
    got = {(int(g), int(e) - b0): (int(c), float(w)) for g, e, c, w in rows}
    assert got[(0, 0)] == (1, 3.0)
    assert got[(0, 1)] == (2, 5.0)
    assert got[(0, 11)] == (2, 5.0)
    assert got[(0, 12)] == (1, 2.0)  # the first event has left the hour
    assert (0, 13) not in got
    assert got[(1, 11)] == (1, 1.0) and (1, 12) not in got
    assert len(got) == 13 + 12
    assert set(windows.hour[windows.grid == 1].tolist()) == {T0 // 3600}


def test_hour_of_week_matches_the_workers() -> None:
    moments = np.array([T0, T0 + 3599.0, T0 + 86_400 * 3 + 7200.0, T0 - 1.0])
    assert rb.hour_of_week(moments).tolist() == [hour_of_week(t) for t in moments]


@pytest.mark.parametrize(("count", "mean"), [(1, 0.5), (2, 0.01), (3, 0.001), (5, 2.0), (12, 0.3)])
def test_poisson_tail_agrees_with_the_workers_surprise(count: int, mean: float) -> None:
    got = rb.poisson_log10_tail(np.array([count]), np.array([mean]))[0]
    assert got == pytest.approx(poisson_surprise(count, mean), rel=1e-9, abs=1e-12)


def test_threshold_keeps_the_flag_rate_within_the_budget_without_splitting_ties() -> None:
    scores = np.array([5.0, 4.0, 4.0, 3.0, 2.0, 2.0, 2.0])
    assert rb.threshold_for_rate(scores, 100, 0.03) == (4.0, 3)  # three grid-hours allowed
    assert rb.threshold_for_rate(scores, 100, 0.02) == (5.0, 1)  # 4.0 would flag three: tie not split
    assert rb.threshold_for_rate(scores, 100, 0.005) == (math.inf, 0)
    assert rb.threshold_for_rate(scores, 100, 0.5) == (2.0, 7)


def test_grid_hour_keeps_the_highest_window() -> None:
    windows = rb.Windows(np.array([0, 0, 1]), np.array([T0 // 300, T0 // 300 + 1, T0 // 300]), np.array([1, 3, 2]),
                         np.zeros(3))  # fmt: skip
    keys, best = rb.grid_hour_max(windows, windows.count.astype(float))
    assert dict(zip(keys.tolist(), best.tolist(), strict=True)) == {T0 // 3600: 3.0, (1 << 32) + T0 // 3600: 2.0}


def test_history_statistics() -> None:
    # grid 0: two events in one hour, one in another, over 10 hours; grid 1: nothing
    history = rb.History(2, 10.0, np.array([0, 0, 0]), np.array([T0 + 1.0, T0 + 2.0, T0 + 7200.0]))
    mean, sd = history.hourly_mean_sd()
    assert mean.tolist() == [0.3, 0.0]
    assert sd[0] == pytest.approx(math.sqrt((4 + 1) / 10 - 0.09))
    assert sd[1] == 0.1  # floored at one event over the history
    means = history.hour_of_week_means()
    weeks = 10 / 168
    assert means[0, hour_of_week(T0)] == pytest.approx(2 / weeks)
    assert means[1, 0] == pytest.approx(0.5 / weeks)  # never seen: half an event over the history


def test_kernel_density_ranks_the_grid_next_to_the_events_first() -> None:
    centres = np.array([[0.0, 0.0], [1000.0, 0.0], [5000.0, 0.0]])
    events = np.array([[900.0, 0.0], [1100.0, 0.0], [0.0, 300.0]])
    density = rb.kde_density(centres, events)
    assert np.argsort(-density).tolist() == [1, 0, 2]


def test_replace_section_replaces_only_between_its_markers(tmp_path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("intro\n<!-- a -->\nold\n<!-- end a -->\noutro\n", encoding="utf-8")
    replace_section(path, "a", "new")
    replace_section(path, "b", "appended")
    assert path.read_text(encoding="utf-8") == (
        "intro\n<!-- a -->\n\nnew\n\n<!-- end a -->\noutro\n\n<!-- b -->\n\nappended\n\n<!-- end b -->\n"
    )
