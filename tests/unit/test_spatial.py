"""The spatial term (pingan/index/spatial.py): Getis-Ord Gi and Gi* against numbers worked out by hand, the lift
rules, the [spatial] table, and the map snapshot that applies them (api/views.py)."""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pingan.api.models import GridRisk
from pingan.api.responses import dumps
from pingan.api.views import build_snapshot
from pingan.config_files import read_toml
from pingan.errors import ConfigError
from pingan.grids import Grid, GridRegistry, ring_area_centroid
from pingan.index.levels import Level
from pingan.index.scoring import IndexConfig
from pingan.index.spatial import Lift, SpatialConfig, getis_ord, parse_spatial, shown_level, spatial_lift
from tests.support.defaults import shipped_registry

LEVELS = IndexConfig(version="t", yellow=50.0, orange=100.0, red=150.0, severity_multiplier={}, sources={})
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# --- a line of five grids -------------------------------------------------------------------------------
#
#   A - B - C - D - E        x = 0, 40, 20, 80, 10
#
# n = 5, Σx = 150, x̄ = 30; deviations -30, 10, -10, 50, -20; Σ(x - x̄)² = 900 + 100 + 100 + 2500 + 400 = 4000,
# s² = 4000 / 5 = 800.
LINE = {"A": 0.0, "B": 40.0, "C": 20.0, "D": 80.0, "E": 10.0}
LINE_NEIGHBOURS = {"A": ["B"], "B": ["A", "C"], "C": ["B", "D"], "D": ["C", "E"], "E": ["D"]}


def test_gi_star_on_a_line_by_hand() -> None:
    # Gi* counts the grid itself: W = 2 at the ends, 3 inside. n·W − W² = 2·3 = 3·2 = 6 either way, so every
    # denominator is s·sqrt(6 / 4) = sqrt(800 · 1.5) = sqrt(1200) = 20·sqrt(3).
    #   A: (0 + 40)       − 30·2 = −20     z = −20 / (20√3) = −1/√3
    #   B: (0 + 40 + 20)  − 30·3 = −30     z = −√3/2
    #   C: (40 + 20 + 80) − 30·3 =  50     z =  5 / (2√3)
    #   D: (20 + 80 + 10) − 30·3 =  20     z =  1/√3
    #   E: (80 + 10)      − 30·2 =  30     z =  √3/2
    z = getis_ord(LINE, LINE_NEIGHBOURS, include_self=True)
    r3 = math.sqrt(3.0)
    expected = {"A": -1 / r3, "B": -r3 / 2, "C": 5 / (2 * r3), "D": 1 / r3, "E": r3 / 2}
    assert z == pytest.approx(expected, rel=1e-12)
    assert z["C"] == pytest.approx(1.443376, abs=1e-6)


def test_gi_on_a_line_by_hand() -> None:
    # Gi leaves the grid out of everything: the other m = 4 values give the mean and s, and n becomes m.
    # C: others 0, 40, 80, 10: mean 32.5, deviations −32.5, 7.5, 47.5, −22.5, s² = 3875 / 4 = 968.75.
    #    W = 2 (B, D): (40 + 80) − 32.5·2 = 55; sqrt((4·2 − 4) / 3) = sqrt(4/3); z = 55 / (√968.75 · √(4/3)) = 1.530338
    # A: others 40, 20, 80, 10: mean 37.5, s² = (6.25 + 306.25 + 1806.25 + 756.25) / 4 = 718.75.
    #    W = 1 (B): 40 − 37.5 = 2.5; sqrt((4 − 1) / 3) = 1; z = 2.5 / √718.75 = 0.093250
    # E: others 0, 40, 20, 80: mean 35, s² = (1225 + 25 + 225 + 2025) / 4 = 875.
    #    W = 1 (D): 80 − 35 = 45; z = 45 / √875 = 1.521278
    z = getis_ord(LINE, LINE_NEIGHBOURS, include_self=False)
    assert z["C"] == pytest.approx(55 / (math.sqrt(968.75) * math.sqrt(4 / 3)), rel=1e-12)
    assert z["A"] == pytest.approx(2.5 / math.sqrt(718.75), rel=1e-12)
    assert z["E"] == pytest.approx(45 / math.sqrt(875), rel=1e-12)
    assert (round(z["C"], 6), round(z["A"], 6), round(z["E"], 6)) == (1.530338, 0.09325, 1.521278)
    # Gi of a grid does not depend on the grid's own value; Gi* does.
    changed = {**LINE, "C": 500.0}
    assert getis_ord(changed, LINE_NEIGHBOURS, include_self=False)["C"] == pytest.approx(z["C"], rel=1e-12)
    assert getis_ord(changed, LINE_NEIGHBOURS, include_self=True)["C"] != pytest.approx(1.443376, abs=1e-3)


def test_undefined_z_is_zero_and_the_weights_are_clean() -> None:
    assert getis_ord({}, {}, include_self=True) == {}
    assert getis_ord({"A": 5.0}, {}, include_self=True) == {"A": 0.0}
    flat = dict.fromkeys("ABCDE", 7.0)
    assert set(getis_ord(flat, LINE_NEIGHBOURS, include_self=True).values()) == {0.0}  # s = 0
    assert set(getis_ord(flat, LINE_NEIGHBOURS, include_self=False).values()) == {0.0}
    # Gi of the one grid that differs from all others: the others are all equal, s = 0.
    spike = {**dict.fromkeys("ABCDE", 0.0), "C": 90.0}
    assert getis_ord(spike, LINE_NEIGHBOURS, include_self=False)["C"] == 0.0
    # No neighbours: W = 0 for Gi. Unknown ids, the grid itself and repeats are not extra weights.
    assert getis_ord(LINE, {}, include_self=False) == dict.fromkeys(LINE, 0.0)
    messy = {**LINE_NEIGHBOURS, "C": ["B", "D", "B", "C", "NOT-A-GRID"]}
    for star in (True, False):
        assert getis_ord(LINE, messy, include_self=star) == getis_ord(LINE, LINE_NEIGHBOURS, include_self=star)


def _by_definition(values: dict[str, float], neighbours: dict[str, list[str]], star: bool) -> dict[str, float]:
    """Getis & Ord (1992) as printed: G = Σ w x / Σ x over the compared grids, with its mean and variance."""
    z = {}
    for i in values:
        compared = [j for j in values if star or j != i]
        n = len(compared)
        w = {j: 1.0 if j in neighbours[i] or (star and j == i) else 0.0 for j in compared}
        y1 = sum(values[j] for j in compared) / n
        y2 = sum(values[j] ** 2 for j in compared) / n - y1**2
        weight = sum(w.values())
        if y1 == 0 or y2 <= 1e-9 or weight == 0 or weight == n:
            z[i] = 0.0
            continue
        g = sum(w[j] * values[j] for j in compared) / sum(values[j] for j in compared)
        expected = weight / n
        variance = weight * (n - weight) / (n**2 * (n - 1)) * y2 / y1**2
        z[i] = (g - expected) / math.sqrt(variance)
    return z


def test_agrees_with_the_published_ratio_form_on_random_graphs() -> None:
    rng = random.Random(20261123)
    for _ in range(100):
        ids = [f"G{k}" for k in range(rng.randint(4, 14))]
        values = {i: rng.choice([0.0, 0.0, round(rng.uniform(1, 200), 1)]) for i in ids}
        values[ids[0]] = 75.0  # at least one positive value: the ratio form divides by Σx
        neighbours: dict[str, list[str]] = {i: [] for i in ids}
        for a in ids:
            for b in ids:
                if a < b and rng.random() < 0.3:
                    neighbours[a].append(b)
                    neighbours[b].append(a)
        for star in (True, False):
            assert getis_ord(values, neighbours, include_self=star) == pytest.approx(
                _by_definition(values, neighbours, star), rel=1e-9, abs=1e-9
            )


# --- a 3×3 block, a line with a lone red grid, and quiet grids ------------------------------------------
#
#   a   b   c          0  100    0
#   d   e   f        100   90  100          r1 - r2 - r3      0  200  0
#   g   h   i          0    0    0
#
# plus 29 quiet grids without neighbours (0): n = 41. Hot (≥ 50) are b, d, f (orange), e (yellow), r2 (red).
BLOCK = {
    "a": ["b", "d"], "b": ["a", "c", "e"], "c": ["b", "f"], "d": ["a", "e", "g"], "e": ["b", "d", "f", "h"],
    "f": ["c", "e", "i"], "g": ["d", "h"], "h": ["e", "g", "i"], "i": ["f", "h"],
    "r1": ["r2"], "r2": ["r1", "r3"], "r3": ["r2"],
}  # fmt: skip
QUIET = [f"q{k:02d}" for k in range(29)]
SCORES = {**dict.fromkeys([*BLOCK, *QUIET], 0.0), "b": 100.0, "d": 100.0, "f": 100.0, "e": 90.0, "r2": 200.0}

# e, by hand: the other m = 40 grids hold b, d, f = 100 and r2 = 200: Σ = 500, x̄ = 12.5,
# Σx² / m = 70000 / 40 = 1750, s² = 1750 − 12.5² = 1593.75. W = 4 (b, d, f, h): Σ w x = 300,
# numerator = 300 − 4·12.5 = 250; sqrt((40·4 − 4²) / 39) = sqrt(144 / 39) = 1.921538;
# z = 250 / (39.921799 · 1.921538) = 3.258975.
GI_E = 3.258975
# a, by hand: the other 40 hold b, d, f = 100, e = 90, r2 = 200: Σ = 590, x̄ = 14.75, Σx² = 78100,
# s² = 78100 / 40 − 14.75² = 1734.9375. W = 2 (b, d): numerator = 200 − 29.5 = 170.5;
# sqrt((80 − 4) / 39) = 1.395966; z = 170.5 / (41.652581 · 1.395966) = 2.932297.
GI_A = 2.932297
# r2, by hand: its neighbours r1, r3 are 0. The other 40 hold 100, 100, 100, 90: Σ = 390, x̄ = 9.75,
# s² = 38100 / 40 − 9.75² = 857.4375; numerator = 0 − 2·9.75 = −19.5; z = −19.5 / (29.281992 · 1.395966)
# = −0.477044. Gi* counts r2 itself: all 41 values, Σ = 590, x̄ = 14.390244, s² = 78100/41 − x̄² = 1697.798929;
# W = 3, numerator = 200 − 3·14.390244 = 156.829268; sqrt((41·3 − 9) / 40) = 1.688194;
# z = 156.829268 / (41.204356 · 1.688194) = 2.254559: a hot spot by Gi*, from its own score alone.
GI_R2, GI_STAR_R2 = -0.477044, 2.254559


def test_block_statistics_by_hand() -> None:
    gi = getis_ord(SCORES, BLOCK, include_self=False)
    star = getis_ord(SCORES, BLOCK, include_self=True)
    assert (round(gi["e"], 6), round(gi["a"], 6), round(gi["r2"], 6)) == (GI_E, GI_A, GI_R2)
    assert round(star["r2"], 6) == GI_STAR_R2
    assert all(z == 0.0 for grid, z in gi.items() if grid in QUIET)  # no neighbours


def test_a_lone_red_grid_among_quiet_ones_is_not_lifted() -> None:
    lift = spatial_lift(SCORES, BLOCK, SpatialConfig(), LEVELS)["r2"]
    assert lift.gi_star_z > 1.96  # Gi* calls it a hot spot: its own score...
    assert (lift.gi_z < 0, lift.hot_neighbours, lift.lift, lift.score, lift.level) == (True, 0, 0.0, 200.0, Level.RED)


def test_a_yellow_grid_with_hot_neighbours_is_lifted_into_orange() -> None:
    lifts = spatial_lift(SCORES, BLOCK, SpatialConfig(), LEVELS)
    e = lifts["e"]
    # 10 points per z above 1.96: 10 × (3.258975 − 1.96) = 12.99 → 13.0; 90 + 13 = 103 is orange.
    assert e == Lift(pytest.approx(3.638684, abs=1e-6), pytest.approx(GI_E, abs=1e-6), 3, 13.0, 103.0, Level.ORANGE)
    assert shown_level("yellow", e) == "orange"
    # The orange grids b, d, f have one hot neighbour each (e): the edge of a cluster, not lifted.
    assert [(lifts[g].hot_neighbours, lifts[g].lift) for g in "bdf"] == [(1, 0.0)] * 3
    # Only e is lifted: a and c have Gi 2.93 and two hot neighbours but no score of their own.
    assert sorted(g for g, lift in lifts.items() if lift.lift) == ["e"]


def test_the_lift_is_capped_at_max_lift() -> None:
    # 100 points per z would give 100 × 1.298975 = 129.9; the cap keeps it at 50: one colour at most.
    e = spatial_lift(SCORES, BLOCK, SpatialConfig(points_per_z=100.0), LEVELS)["e"]
    assert (e.lift, e.score, e.level) == (50.0, 140.0, Level.ORANGE)
    e = spatial_lift(SCORES, BLOCK, SpatialConfig(points_per_z=100.0, max_lift=20.0), LEVELS)["e"]
    assert (e.lift, e.score) == (20.0, 110.0)


def test_min_own_score_keeps_empty_grids_unpainted() -> None:
    # a's Gi (2.932297) and hot neighbours (b, d) do not depend on a's own score; only the gate does.
    # Lift when let through: 10 × (2.932297 − 1.96) = 9.72 → 9.7.
    for own, lift in [(0.0, 0.0), (0.9, 0.0), (1.0, 9.7), (40.0, 9.7)]:
        result = spatial_lift({**SCORES, "a": own}, BLOCK, SpatialConfig(), LEVELS)["a"]
        assert (round(result.gi_z, 6), result.hot_neighbours, result.lift) == (GI_A, 2, lift), own
    result = spatial_lift({**SCORES, "a": 0.9}, BLOCK, SpatialConfig(min_own_score=0.5), LEVELS)["a"]
    assert result.lift == 9.7
    assert (result.score, result.level) == (10.6, Level.GREEN)


def test_hot_neighbours_threshold_and_z_threshold() -> None:
    def lifted(config: SpatialConfig, scores: dict[str, float] = SCORES) -> list[str]:
        scores = {**scores, "a": 5.0}
        return sorted(g for g, lift in spatial_lift(scores, BLOCK, config, LEVELS).items() if lift.lift)

    assert lifted(SpatialConfig()) == ["a", "e"]
    assert lifted(SpatialConfig(min_hot_neighbours=3)) == ["e"]  # a has two: b, d
    assert lifted(SpatialConfig(min_hot_neighbours=5)) == []
    assert lifted(SpatialConfig(hot_score=100.5)) == []  # b, d, f are no longer hot
    assert lifted(SpatialConfig(z_threshold=3.0)) == ["e"]  # a: 2.93
    assert lifted(SpatialConfig(z_threshold=3.3)) == []  # e: 3.26
    assert lifted(SpatialConfig(enabled=False)) == []
    disabled = spatial_lift(SCORES, BLOCK, SpatialConfig(enabled=False), LEVELS)["e"]
    assert (round(disabled.gi_z, 6), disabled.lift, disabled.score) == (GI_E, 0.0, 90.0)  # still reported


def test_the_lift_never_lowers_a_level() -> None:
    e = spatial_lift(SCORES, BLOCK, SpatialConfig(), LEVELS)["e"]  # 103.0, orange
    assert shown_level("red", e) == "red"  # held up by the worker's hysteresis: stays red
    assert shown_level("orange", e) == "orange"
    assert shown_level("green", e) == "orange"
    r2 = spatial_lift(SCORES, BLOCK, SpatialConfig(), LEVELS)["r2"]
    assert shown_level("orange", r2) == "orange"  # not lifted: the stored level as it is, even below red
    # A hysteresis-held red grid whose score has fallen to 40: lifted to 53, still red on the map.
    held = spatial_lift({**SCORES, "e": 40.0}, BLOCK, SpatialConfig(), LEVELS)["e"]
    assert (held.score, held.level, shown_level("red", held)) == (53.0, Level.YELLOW, "red")


# --- the map snapshot ------------------------------------------------------------------------------------


def _registry() -> GridRegistry:
    grids = []
    for k, grid_id in enumerate([*BLOCK, *QUIET]):
        lon, lat = 103.6 + (k % 10) * 0.01, 31.0 + (k // 10) * 0.01
        ring = ((lon, lat), (lon + 0.01, lat), (lon + 0.01, lat + 0.01), (lon, lat + 0.01))
        area, centroid = ring_area_centroid(ring)
        grids.append(Grid(grid_id, grid_id, "urban", 100, 40, "D1", "S1", "C1", "P1", ring, centroid,
                          (lon, lat, lon + 0.01, lat + 0.01), area, tuple(sorted(BLOCK.get(grid_id, ())))))  # fmt: skip
    return GridRegistry(grids)


def _row(grid_id: str, score: float, level: str) -> dict[str, Any]:
    return {"grid_id": grid_id, "as_of": NOW, "score": score, "level": level, "previous_level": "",
            "window_events": 3, "dominant_source": "call110", "config_version": "v1"}  # fmt: skip


ROWS = [_row(g, s, level) for g, s, level in
        [("b", 100.0, "orange"), ("d", 100.0, "orange"), ("f", 100.0, "orange"), ("e", 90.0, "yellow"),
         ("r2", 200.0, "red")]]  # fmt: skip


def test_snapshot_shows_lifted_score_and_level_with_the_own_ones() -> None:
    snapshot = build_snapshot(_registry(), ROWS, NOW, spatial=SpatialConfig(), levels=LEVELS)
    e = snapshot.by_id["e"]
    assert (e["score"], e["level"], e["own_score"], e["own_level"]) == (103.0, "orange", 90.0, "yellow")
    assert e["spatial"] == {"gi_star_z": 3.639, "gi_z": 3.259, "hot_neighbours": 3, "lift": 13.0}
    r2 = snapshot.by_id["r2"]
    assert (r2["score"], r2["level"], r2["spatial"]["lift"], r2["spatial"]["gi_z"]) == (200.0, "red", 0.0, -0.477)
    a = snapshot.by_id["a"]  # no risk row: score 0, never painted
    assert (a["score"], a["level"], a["own_score"], a["spatial"]["lift"]) == (0.0, "green", 0.0, 0.0)
    for item in snapshot.grids:
        GridRisk.model_validate(orjson.loads(dumps(item)))

    # A hysteresis-held level is a floor; without the term (or disabled) the map is the own values.
    held = [*ROWS[:3], _row("e", 90.0, "red"), ROWS[4]]
    assert build_snapshot(_registry(), held, NOW, spatial=SpatialConfig(), levels=LEVELS).by_id["e"]["level"] == "red"
    for spatial in (None, SpatialConfig(enabled=False)):
        plain = build_snapshot(_registry(), ROWS, NOW, spatial=spatial, levels=LEVELS).by_id["e"]
        assert (plain["score"], plain["level"], plain["spatial"]) == (90.0, "yellow", None)
    with pytest.raises(ValueError, match="levels"):
        build_snapshot(_registry(), ROWS, NOW, spatial=SpatialConfig())


def test_snapshot_of_the_demo_district_is_computed_quickly() -> None:
    registry = shipped_registry()
    rng = random.Random(7)
    rows = [_row(g.grid_id, round(rng.uniform(1, 180), 1), "yellow") for g in registry.grids if rng.random() < 0.2]
    started = time.perf_counter()
    snapshot = build_snapshot(registry, rows, NOW, spatial=SpatialConfig(), levels=LEVELS)
    assert len(snapshot.grids) == len(registry) >= 900
    # ~10 ms on one core; generous for slow CI machines, but a quadratic version would take seconds.
    assert time.perf_counter() - started < 0.5


# --- the [spatial] table ---------------------------------------------------------------------------------


def test_defaults_when_the_table_is_missing() -> None:
    assert parse_spatial({}) == SpatialConfig()
    assert SpatialConfig() == SpatialConfig(True, 1.96, 10.0, 50.0, 1.0, 2, 50.0)
    # A hot neighbour follows the yellow bound of [levels] unless hot_score says otherwise.
    assert parse_spatial({"levels": {"yellow": 40, "orange": 80, "red": 120}}).hot_score == 40.0
    assert parse_spatial({"levels": {"yellow": 40}, "spatial": {"hot_score": 60}}).hot_score == 60.0
    assert parse_spatial({"levels": {"yellow": "x"}}).hot_score == 50.0  # parse_config reports that one


def test_the_shipped_config_parses_with_the_documented_defaults(settings) -> None:
    document = read_toml(settings.risk_config_path, "risk index config")
    assert "spatial" in document
    assert parse_spatial(document) == SpatialConfig(hot_score=float(document["levels"]["yellow"]))


def test_values_are_read_and_integers_accepted() -> None:
    config = parse_spatial({"spatial": {"enabled": False, "z_threshold": 0, "points_per_z": 5, "max_lift": 25.5,
                                        "min_own_score": 2, "min_hot_neighbours": 3, "hot_score": 100}})  # fmt: skip
    assert config == SpatialConfig(False, 0.0, 5.0, 25.5, 2.0, 3, 100.0)
    assert isinstance(config.points_per_z, float)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("on", "spatial must be a table"),
        ({"z_treshold": 2.0}, "unknown keys z_treshold"),
        ({"enabled": "yes"}, "spatial.enabled must be true or false"),
        ({"enabled": 1}, "spatial.enabled must be true or false"),
        ({"z_threshold": -1.0}, "spatial.z_threshold must be at least 0"),
        ({"z_threshold": "1.96"}, "spatial.z_threshold must be a finite number"),
        ({"z_threshold": float("nan")}, "spatial.z_threshold must be a finite number"),
        ({"points_per_z": 0}, "spatial.points_per_z must be greater than 0"),
        ({"points_per_z": True}, "spatial.points_per_z must be a finite number"),
        ({"max_lift": -5.0}, "spatial.max_lift must be greater than 0"),
        ({"max_lift": float("inf")}, "spatial.max_lift must be a finite number"),
        ({"min_own_score": 0.0}, "spatial.min_own_score must be greater than 0"),
        ({"min_hot_neighbours": 0}, "spatial.min_hot_neighbours must be an integer of at least 1"),
        ({"min_hot_neighbours": 2.5}, "spatial.min_hot_neighbours must be an integer of at least 1"),
        ({"min_hot_neighbours": True}, "spatial.min_hot_neighbours must be an integer of at least 1"),
        ({"hot_score": 0}, "spatial.hot_score must be greater than 0"),
    ],
)
def test_bad_values_are_config_errors_that_say_which(table: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spatial({"spatial": table})
    assert message in str(caught.value)
