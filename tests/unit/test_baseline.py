"""Baselines and surprise: the Poisson tail, hour of the week, priors, shrinkage, and scoring against them."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pingan.api.views import baseline_body
from pingan.errors import ConfigError
from pingan.index.baseline import (
    HOURS_PER_WEEK,
    BaselineConfig,
    BaselineModel,
    GridProfile,
    LearnedBaseline,
    SourcePrior,
    hour_of_week,
    learn,
    parse_baseline,
)
from pingan.index.levels import Level
from pingan.index.scoring import assess
from pingan.index.surprise import MAX_SURPRISE, log_lower_regularized_gamma, poisson_surprise
from pingan.streams.windows import PartitionState, WindowSpec
from tests.support.defaults import shipped_index

INDEX = shipped_index()


# --- surprise -----------------------------------------------------------------------------------------------


def test_surprise_is_the_poisson_tail_for_whole_counts() -> None:
    # P(X >= 3 | 0.1) = 1 - e^-0.1 (1 + 0.1 + 0.1^2 / 2)
    assert poisson_surprise(3, 0.1) == pytest.approx(-math.log10(1 - math.exp(-0.1) * 1.105), rel=1e-9)
    # P(X >= 1 | 2) = 1 - e^-2
    assert poisson_surprise(1, 2.0) == pytest.approx(-math.log10(1 - math.exp(-2.0)), rel=1e-9)
    # P(X >= 10 | 10) summed term by term (the continued-fraction branch: x >= a + 1 is false, a = 10, x = 10)
    tail = 1 - sum(math.exp(-10) * 10**k / math.factorial(k) for k in range(10))
    assert poisson_surprise(10, 10.0) == pytest.approx(-math.log10(tail), rel=1e-9)
    # P(X >= 2 | 5) = 1 - e^-5 (1 + 5): x >= a + 1, the continued fraction
    assert poisson_surprise(2, 5.0) == pytest.approx(-math.log10(1 - 6 * math.exp(-5)), rel=1e-9)


def test_surprise_is_zero_for_nothing_grows_smoothly_between_counts_and_is_capped() -> None:
    assert poisson_surprise(0, 0.5) == 0.0
    assert poisson_surprise(2, 1.0) < poisson_surprise(2.5, 1.0) < poisson_surprise(3, 1.0)
    assert poisson_surprise(3, 1.0) > poisson_surprise(3, 2.0)  # the more expected, the less surprising
    assert poisson_surprise(500, 1.0) == MAX_SURPRISE  # one in 1e-1000 would underflow without logs
    with pytest.raises(ValueError):
        poisson_surprise(1, 0.0)
    assert log_lower_regularized_gamma(1.0, 0.0) == -math.inf


# --- hours of the week ----------------------------------------------------------------------------------


def test_hour_of_week_counts_from_monday_midnight_utc() -> None:
    monday = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
    assert hour_of_week(monday.timestamp()) == 0
    assert hour_of_week((monday + timedelta(hours=8, minutes=59)).timestamp()) == 8
    assert hour_of_week((monday + timedelta(days=6, hours=23)).timestamp()) == 167
    assert hour_of_week((monday + timedelta(days=7)).timestamp()) == 0
    for hours in range(0, 24 * 14, 7):
        moment = monday + timedelta(hours=hours)
        assert hour_of_week(moment.timestamp()) == moment.weekday() * 24 + moment.hour


# --- priors and learning ----------------------------------------------------------------------------------


def test_prior_rate_from_population_and_grid_type_with_a_floor() -> None:
    prior = SourcePrior(per_1000_residents=0.09, by_type={"transport_hub": 0.75}, minimum=0.03)
    assert prior.rate("urban", 600) == pytest.approx(0.054)  # 0.09 * 0.6
    assert prior.rate("transport_hub", 40) == pytest.approx(0.7536)  # 0.09 * 0.04 + 0.75
    assert prior.rate("rural", 100) == 0.03  # 0.009 is below the minimum


def test_without_history_every_grid_expects_its_prior_flat_over_the_week() -> None:
    config = BaselineConfig(priors={"call110": SourcePrior(per_1000_residents=0.1, minimum=0.01)})
    model = BaselineModel(config, [GridProfile("G1", "urban", 500)])
    assert model.version == "prior"
    assert model.hourly("G1", "call110") == pytest.approx((0.05,) * HOURS_PER_WEEK)
    # twelve five-minute buckets = one hour at 0.05 per hour
    starts = range(0, 3600, 300)
    assert model.expected("G1", "call110", starts, 300) == pytest.approx(0.05)
    # a grid the registry does not know, and a source without a prior, get the minimum of the default prior
    assert model.hourly("G404", "call110")[0] == 0.01
    assert model.hourly("G1", "drone")[0] == config.default_prior.minimum


def test_learning_weighs_events_and_measures_the_unit_weight() -> None:
    weights = {("call110", "criminal", 3): 3.0, ("call110", "help", 1): 0.15, ("camera", "crowd_density", 1): 0.0}
    rows = [
        ("G1", "call110", "criminal", 3, 10, 2),
        ("G1", "call110", "help", 1, 10, 4),
        ("G1", "camera", "crowd_density", 1, 10, 50),  # weighs nothing: not part of the baseline
        ("G2", "call110", "help", 1, 11, 1),
    ]
    learned = learn(rows, lambda s, t, v: weights[(s, t, v)], weeks=2, version="v1")
    assert learned.cells == {("G1", "call110"): {10: pytest.approx(6.6)}, ("G2", "call110"): {11: pytest.approx(0.15)}}
    # unit = sum(w^2) / sum(w) = (2 * 9 + 5 * 0.0225) / (6 + 0.75)
    assert learned.unit_weights["call110"] == pytest.approx((18 + 5 * 0.0225) / 6.75)
    with pytest.raises(ValueError):
        learn([], lambda *_: 1.0, weeks=0, version="v0")


def test_a_learned_cell_shrinks_towards_the_grid_rate_shaped_by_the_district_profile() -> None:
    config = BaselineConfig(priors={"call110": SourcePrior(minimum=0.01)}, grid_prior_hours=168.0, cell_prior_weeks=4.0)
    # One week of history; the whole district saw 168 weighted calls, all in hour 10, all in G1. G2 was in
    # the registry and saw nothing; G3 was added after the snapshot.
    learned = LearnedBaseline("v1", 1.0, {("G1", "call110"): {10: 168.0}}, {"call110": 2.0}, grids=frozenset({"G2"}))
    grids = [GridProfile(g, "urban", 0) for g in ("G1", "G2", "G3")]
    model = BaselineModel(config, grids, learned)
    # profile: mean 168 / 168 = 1 per hour, smoothing 0.1: hour 10 (168 + 0.1) / 1.1, others 0.1 / 1.1
    profile = model.profile("call110")
    assert profile[10] == pytest.approx(168.1 / 1.1) and profile[0] == pytest.approx(0.1 / 1.1)
    assert sum(profile) / HOURS_PER_WEEK == pytest.approx(1.0)
    # G1's rate: (168 + 168 * 0.01 prior) / (168 hours + 168) = 0.505 per hour
    rate = (168 + 168 * 0.01) / 336
    g1 = model.hourly("G1", "call110")
    assert g1[10] == pytest.approx((168 + 4 * rate * 168.1 / 1.1) / 5)
    assert g1[11] == pytest.approx((0 + 4 * rate * 0.1 / 1.1) / 5)
    # G2 saw nothing for a week: (0 + 168 * 0.01) / 336 = 0.005 per hour, shaped, then floored at 0.01
    g2 = model.hourly("G2", "call110")
    assert g2[10] == pytest.approx(4 * 0.005 * 168.1 / 1.1 / 5) and g2[11] == 0.01
    # G3 is new: its prior (0.01) shaped by the district's profile, floored at the minimum
    g3 = model.hourly("G3", "call110")
    assert g3[10] == pytest.approx(0.01 * 168.1 / 1.1) and g3[11] == 0.01
    assert model.unit_weight("call110") == 2.0 and model.unit_weight("camera") == 1.0
    assert model.version == "v1"


def test_learning_records_the_registry_grids_as_observed() -> None:
    rows = [("G1", "call110", "criminal", 3, 10, 1)]
    learned = learn(rows, lambda *_: 3.0, weeks=1, version="v1", grids=["G1", "G2"])
    assert learned.grids == {"G1", "G2"}
    assert learn(rows, lambda *_: 3.0, weeks=1, version="v1").grids == {"G1"}  # grids with events always are


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"grid_prior_hours": 0}, "grid_prior_hours must be > 0"),
        ({"cell_prior_weeks": "x"}, "cell_prior_weeks must be a number"),
        ({"priors": {"call110": {"minimum": 0}}}, "priors.call110.minimum must be > 0"),
        ({"priors": {"call110": {"per_1000": 1}}}, "unknown keys"),
        ({"priors": {"call110": {"by_type": {"urban": -1}}}}, "by_type.urban must be >= 0"),
        ({"priors": []}, "must be a table"),
    ],
)
def test_bad_baseline_config_is_rejected_with_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_baseline(raw)


def test_the_shipped_config_has_priors_for_the_four_feeds() -> None:
    assert set(INDEX.baseline.priors) == {"call110", "camera", "checkpoint", "app_report"}
    assert INDEX.surprise_breakpoints is not None


# --- scoring against the baseline ---------------------------------------------------------------------------


def test_the_same_calls_are_red_news_in_a_quiet_grid_and_normal_in_a_busy_one() -> None:
    counts = {("call110", "criminal", 3): 3}  # 9.0 weighted
    volume = 100 + (9 - 5) * 50 / 9  # call110 breakpoints (5, 100) .. (14, 150)
    quiet = assess(counts, INDEX, {"call110": (0.06, 2.1)})
    busy = assess(counts, INDEX, {"call110": (9.0, 2.1)})
    unbased = assess(counts, INDEX)

    quiet_surprise = poisson_surprise(9 / 2.1, 0.06 / 2.1)
    assert quiet_surprise > 8  # beyond the last surprise breakpoint (8, 200): the volume index decides
    assert quiet.sources["call110"].surprise == round(quiet_surprise, 2)
    assert (quiet.score, quiet.level) == (round(volume, 1), Level.ORANGE)

    busy_surprise = round(poisson_surprise(9 / 2.1, 9 / 2.1), 2)  # observed = expected: about 0.25
    busy_index = round(busy_surprise * 50 / 2, 1)  # (0, 0) .. (2, 50)
    assert busy.sources["call110"].surprise == busy_surprise
    assert (busy.score, busy.level) == (busy_index, Level.GREEN)
    assert busy.sources["call110"].volume_index == round(volume, 1)  # as much happened; it is normal here

    assert (unbased.score, unbased.sources["call110"].expected) == (round(volume, 1), None)


def test_surprise_between_breakpoints_is_interpolated_and_caps_the_volume() -> None:
    # 20 crowd-density readings (0.25 each at severity 3) = 5.0 weighted: camera volume (0,0)..(10,50) = 25.0
    counts = {("camera", "crowd_density", 3): 20}
    expected = 2.0
    surprise = poisson_surprise(5.0, expected)  # unit weight 1: between 1 and 2
    assert 1 < surprise < 2
    detail = assess(counts, INDEX, {"camera": (expected, 1.0)}).sources["camera"]
    # (0, 0)..(2, 50) on the exact surprise, shown cut to 0.1 (never computed from the rounded 1.28)
    assert detail.surprise_index == math.floor(surprise * 25 * 10) / 10 == 31.9
    assert detail.surprise == round(surprise, 2) == 1.28
    assert detail.volume_index == 25.0
    assert detail.sub_index == 25.0


def test_display_rounding_never_reaches_the_colour() -> None:
    """A surprise of 1.9957 is 49.9 (green) on the exact value; rounded to 2.00 first it would be 50.0 (yellow)."""
    counts = {("camera", "crowd_density", 3): 20}  # 5.0 weighted: camera volume 25.0
    config = replace(INDEX, sources={**INDEX.sources, "camera": replace(INDEX.sources["camera"],
                     breakpoints=((0.0, 0.0), (1.0, 100.0)))})  # fmt: skip
    # find the expectation that gives a surprise just under 2 for 5 events
    low, high = 0.5, 3.0
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if poisson_surprise(5.0, mid) > 1.9957 else (low, mid)
    assessment = assess(counts, config, {"camera": (low, 1.0)})
    detail = assessment.sources["camera"]
    assert detail.surprise == 2.0 and detail.surprise_index == 49.8
    assert (assessment.score, assessment.level) == (49.8, Level.GREEN)


def test_memoised_window_assessments_follow_new_events_and_the_baseline() -> None:
    spec = WindowSpec(300, 3600, 120, INDEX.quiet_windows)
    state = PartitionState(spec)
    t0 = int(datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp())
    bucket = spec.bucket_start(t0)
    state.apply("G1", t0 * 1000, ("call110", "criminal", 3), 0, "e0")
    first = state.assess_hop("G1", bucket, INDEX)
    assert state.assess_hop("G1", bucket, INDEX) is first  # memoised while nothing changes
    state.apply("G1", t0 * 1000, ("call110", "criminal", 3), 1, "e1")
    assert state.assess_hop("G1", bucket, INDEX).window_events == 2  # a new event is never hidden
    state.forget_assessments()
    model = BaselineModel(INDEX.baseline, [GridProfile("G1", "transport_hub", 40)])
    based = state.assess_hop("G1", bucket, INDEX, model)
    hourly_prior = INDEX.baseline.prior("call110").rate("transport_hub", 40)  # flat: one hour expects one hour's
    assert based.sources["call110"].expected == round(hourly_prior, 3)


def test_the_baseline_body_lists_every_index_source_hour_by_hour() -> None:
    learned = LearnedBaseline("v1", 1.0, {("G1", "call110"): {20: 1.0}}, {"call110": 2.0})
    model = BaselineModel(INDEX.baseline, [GridProfile("G1", "urban", 600)], learned)
    body = baseline_body(model, "G1", INDEX)
    assert (body["grid_id"], body["baseline_version"], body["config_version"]) == ("G1", "v1", INDEX.version)
    assert [s["source"] for s in body["sources"]] == sorted(INDEX.sources)
    [calls] = [s for s in body["sources"] if s["source"] == "call110"]
    assert calls["peak_hour_of_week"] == 20 and calls["unit_weight"] == 2.0
    assert calls["expected_per_hour"] == [round(v, 4) for v in model.hourly("G1", "call110")]
    assert calls["mean_per_hour"] == round(sum(model.hourly("G1", "call110")) / HOURS_PER_WEEK, 4)
