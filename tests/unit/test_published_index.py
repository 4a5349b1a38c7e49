"""The published index's pure parts, hand-computed: periods, weights, baseline, score, ranks, hats."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pingan.errors import ConfigError
from pingan.index.published import (
    FlagRule,
    Period,
    Scored,
    UnitInfo,
    baseline_rate,
    build_units,
    competition_ranks,
    flag_diff,
    flagged_lists,
    flagged_units,
    last_complete_period,
    load_config,
    parse_config,
    period_containing,
    ratio_score,
    score_units,
    weigh,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


def document(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": "test-1",
        "timezone": "Asia/Shanghai",
        "min_population": 1000,
        "severity_multiplier": {"1": 0.5, "3": 1.0, "5": 2.0},
        "sources": {
            "call110": {"default_weight": 1.0, "type_weights": {"criminal": 2.0, "help": 0.0}},
            "app_report": {"default_weight": 0.0, "type_weights": {"one_click_alarm": 1.0}},
        },
        "baseline_periods": {"day": 2, "week": 2, "month": 2},
        "score": {"breakpoints": [[0.0, 100.0], [1.0, 90.0], [2.0, 80.0], [3.0, 70.0], [10.0, 0.0]]},
        "bands": {"green": 90.0, "yellow": 80.0, "orange": 70.0},
        "flag": {
            "community": {"worst_n": 1, "below_score": 70.0, "min_incidents": 2},
            "police_station": {"worst_n": 1, "below_score": 70.0, "min_incidents": 2},
        },
    }
    doc.update(overrides)
    return doc


CONFIG = parse_config(document())


def test_shipped_config_loads(settings) -> None:
    config = load_config(settings.published_index_config_path)
    assert config.unit_levels == ("community", "police_station")
    assert config.counted_sources == ("app_report", "call110")
    assert config.event_weight("call110", "criminal", 4) == 4.5  # 3.0 x 1.5
    assert config.event_weight("camera", "fight", 5) == 0.0  # activity, not incidents
    assert config.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "time zone"),
        ({"sources": {}}, "at least one source"),
        ({"baseline_periods": {"day": 2, "week": 2}}, "baseline_periods"),
        ({"score": {"breakpoints": [[0.0, 100.0], [1.0, 100.0]]}}, "decrease"),
        ({"score": {"breakpoints": [[0.0, 90.0], [1.0, 80.0]]}}, "start at"),
        ({"bands": {"green": 70.0, "yellow": 80.0, "orange": 90.0}}, "bands"),
        ({"flag": {"province": {"worst_n": 1, "below_score": 70.0, "min_incidents": 1}}}, "unit levels"),
        ({"min_population": 0}, "min_population"),
    ],
)
def test_bad_config_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(document(**change))
    broken = document()
    del broken["bands"]
    with pytest.raises(ConfigError, match="missing 'bands'"):
        parse_config(broken)


def test_periods_are_local_days_iso_weeks_and_months() -> None:
    wednesday = date(2026, 11, 25)
    assert period_containing("day", wednesday) == Period("day", wednesday, date(2026, 11, 26))
    assert period_containing("week", wednesday) == Period("week", date(2026, 11, 23), date(2026, 11, 30))
    assert period_containing("week", date(2026, 11, 22)).start == date(2026, 11, 16)  # Sunday ends a week
    assert period_containing("month", wednesday) == Period("month", date(2026, 11, 1), date(2026, 12, 1))
    december = period_containing("month", date(2026, 12, 31))
    assert (december.end, december.previous().start) == (date(2027, 1, 1), date(2026, 11, 1))
    assert period_containing("month", date(2026, 3, 15)).previous() == Period(
        "month", date(2026, 2, 1), date(2026, 3, 1)
    )
    assert period_containing("week", wednesday).back(2).start == date(2026, 11, 9)
    # A Beijing day runs 16:00-16:00 UTC.
    start, end = period_containing("day", date(2026, 11, 23)).utc_bounds(SHANGHAI)
    assert (start, end) == (
        int(datetime(2026, 11, 22, 16, tzinfo=UTC).timestamp()),
        int(datetime(2026, 11, 23, 16, tzinfo=UTC).timestamp()),
    )
    with pytest.raises(ValueError, match="period kind"):
        period_containing("year", wednesday)


def test_last_complete_period_is_in_local_time() -> None:
    # 2026-11-23 17:00 UTC is already Tuesday 01:00 in Beijing.
    late_monday = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
    assert last_complete_period("day", late_monday, SHANGHAI).start == date(2026, 11, 23)
    assert last_complete_period("day", late_monday, ZoneInfo("UTC")).start == date(2026, 11, 22)
    assert last_complete_period("week", late_monday, SHANGHAI).start == date(2026, 11, 16)
    assert last_complete_period("month", late_monday, SHANGHAI).start == date(2026, 10, 1)


def test_weights_by_category_and_severity_and_the_dominant_type() -> None:
    counts = {
        ("call110", "criminal", 3): 2,  # 2 x 2.0 x 1.0 = 4.0
        ("call110", "dispute", 5): 1,  # default 1.0 x 2.0 = 2.0
        ("call110", "help", 3): 4,  # weight 0: counted as incidents, weighs nothing
        ("app_report", "one_click_alarm", 1): 3,  # 3 x 1.0 x 0.5 = 1.5
        ("camera", "fight", 5): 9,  # not a counted source
    }
    weighed = weigh(counts, CONFIG)
    assert (weighed.incidents, weighed.weighted, weighed.dominant_type) == (10, 7.5, "call110/criminal")
    assert weigh({}, CONFIG).dominant_type == ""
    assert weigh({("call110", "help", 3): 2}, CONFIG).dominant_type == ""  # nothing weighs: no dominant type
    tie = weigh({("call110", "dispute", 3): 2, ("call110", "criminal", 3): 1}, CONFIG)
    assert tie.dominant_type == "call110/criminal"  # 2.0 each: ties by name


def test_score_is_piecewise_linear_in_the_ratio_to_the_baseline() -> None:
    points = CONFIG.breakpoints
    expected = {0.0: 100.0, 0.5: 95.0, 1.0: 90.0, 2.5: 75.0, 3.0: 70.0, 6.5: 35.0, 10.0: 0.0, 25.0: 0.0}
    assert {ratio: round(ratio_score(ratio, points), 6) for ratio in expected} == expected
    assert [CONFIG.band(s) for s in (100.0, 90.0, 89.9, 80.0, 70.0, 69.9)] == [
        "green", "green", "yellow", "yellow", "orange", "red",
    ]  # fmt: skip


def test_baseline_averages_previous_periods_with_data() -> None:
    day = period_containing("day", date(2026, 11, 23))
    by_day = {
        date(2026, 11, 23): 50.0,  # the period itself: not in its own baseline
        date(2026, 11, 22): 6.0,
        date(2026, 11, 21): 0.0,  # a day without data (before the system started) is skipped
        date(2026, 11, 20): 12.0,
        date(2026, 11, 19): 99.0,  # beyond the 3 previous periods
    }
    # (6 + 12) / 2 per 20,000 residents -> (3.0 + 6.0) / 2 = 4.5 per 10,000
    assert baseline_rate(by_day, 20_000, day, 3) == 4.5
    # no history at all: the period's own district-wide rate
    assert baseline_rate({date(2026, 11, 23): 50.0}, 20_000, day, 3) == 25.0
    assert baseline_rate({}, 20_000, day, 3) == 0.0
    assert baseline_rate(by_day, 0, day, 3) == 0.0
    week = period_containing("week", date(2026, 11, 23))
    # the week before (16-22 Nov) holds 6 + 12 + 99
    assert baseline_rate(by_day, 10_000, week, 1) == 117.0


UNITS = [
    UnitInfo("C1", "一社区", "D", 10_000),
    UnitInfo("C2", "二社区", "D", 10_000),
    UnitInfo("C3", "三社区", "D", 10_000),
    UnitInfo("C4", "四社区", "D", 200),  # floored to 1,000 residents
]


def test_units_are_scored_against_their_district_baseline() -> None:
    counts = {
        "C1": {("call110", "criminal", 3): 4},  # 8.0 per 10,000 residents
        "C2": {("call110", "dispute", 3): 2},  # 2.0
        "C4": {("call110", "dispute", 3): 1},  # 1.0 per 1,000 = 10.0 per 10,000
    }
    scored = {s.unit.unit_id: s for s in score_units(UNITS, counts, {"D": 4.0}, CONFIG)}
    c1, c2, c3, c4 = scored["C1"], scored["C2"], scored["C3"], scored["C4"]
    assert (c1.incidents, c1.weighted, c1.per_10k, c1.baseline_per_10k, c1.ratio) == (4, 8.0, 8.0, 4.0, 2.0)
    assert (c1.score, c1.level, c1.dominant_type) == (80.0, "yellow", "call110/criminal")
    assert (c2.ratio, c2.score, c2.level) == (0.5, 95.0, "green")
    assert (c3.incidents, c3.per_10k, c3.score, c3.dominant_type) == (0, 0.0, 100.0, "")
    assert (c4.per_10k, c4.ratio, c4.score, c4.level) == (10.0, 2.5, 75.0, "orange")
    # a district with no incident anywhere, history included: nothing to compare with, everyone 100
    assert {s.score for s in score_units(UNITS, {}, {}, CONFIG)} == {100.0}


def test_competition_ranks_share_ties() -> None:
    assert competition_ranks({"A": 90.0, "B": 95.0, "C": 90.0, "D": 70.0}) == {"A": 2, "B": 1, "C": 2, "D": 4}
    assert competition_ranks({}) == {}


def _scored(unit_id: str, score: float, incidents: int) -> Scored:
    return Scored(UnitInfo(unit_id, unit_id, "D", 10_000), incidents, 0.0, 0.0, 0.0, 0.0, score,
                  CONFIG.band(score), "")  # fmt: skip


def test_who_wears_the_hat() -> None:
    rule = FlagRule(worst_n=2, below_score=70.0, min_incidents=3)
    units = [
        _scored("A", 60.0, 3),  # below the line and the worst
        _scored("B", 75.0, 9),  # second worst
        _scored("C", 75.0, 4),  # tied with B at the boundary: flagged with it
        _scored("D", 20.0, 2),  # worst score, but too few incidents to judge
        _scored("E", 85.0, 30),
        _scored("F", 95.0, 5),  # better than the baseline: never wears the hat
    ]
    assert flagged_units(units, rule, 90.0) == {"A", "B", "C"}
    assert flagged_units(units, FlagRule(0, 70.0, 3), 90.0) == {"A"}  # ranking rule off: the line only
    # A quiet period: the worst-n rule does not hand hats to green units.
    assert flagged_units([_scored("F", 95.0, 5), _scored("G", 99.0, 3)], rule, 90.0) == frozenset()
    assert flagged_units([_scored("Z", 50.0, 1)], FlagRule(5, 70.0, 0), 90.0) == {"Z"}
    assert flagged_units([_scored("Z", 50.0, 0)], FlagRule(5, 70.0, 0), 90.0) == frozenset()


def test_flag_diff_entered_left_still() -> None:
    diff = flag_diff(["C3", "C1", "C9"], ["C1", "C2"])
    assert (diff.entered, diff.left, diff.still) == (("C3", "C9"), ("C2",), ("C1",))
    assert flag_diff([], []) == flag_diff((), ())


def test_build_units_pairs_periods_with_change_rank_change_and_hats() -> None:
    period = period_containing("day", date(2026, 11, 23))
    current = [_scored("A", 66.7, 4), _scored("B", 100.0, 0), _scored("C", 96.7, 1), _scored("D", 86.7, 2)]
    previous = [_scored("A", 100.0, 0), _scored("B", 93.3, 2), _scored("C", 73.3, 4), _scored("D", 93.3, 2)]
    rows = build_units(period, "community", current, previous, CONFIG)
    got = [
        (r.current.unit.unit_id, r.rank, r.previous_rank, r.change, r.rank_change, r.flagged, r.flag_change)
        for r in rows
    ]
    assert got == [
        ("B", 1, 2, 6.7, 1, False, ""),
        ("C", 2, 4, 23.4, 2, False, "left"),
        ("D", 3, 2, -6.6, -1, False, ""),
        ("A", 4, 1, -33.3, -3, True, "entered"),
    ]
    assert {r.ranked_units for r in rows} == {4}
    assert {(r.config_version, r.timezone) for r in rows} == {("test-1", "Asia/Shanghai")}
    # A unit new in the registry is compared with a quiet previous period.
    (new,) = build_units(period, "community", [_scored("N", 80.0, 3)], [], CONFIG)
    assert (new.previous.score, new.previous_rank, new.change, new.flag_change) == (100.0, 1, -20.0, "entered")


def test_flagged_lists_from_stored_rows_worst_first() -> None:
    rows = [
        {"unit_id": "A", "score": 60.0, "flagged": 1, "previously_flagged": 1},
        {"unit_id": "B", "score": 50.0, "flagged": 1, "previously_flagged": 0},
        {"unit_id": "C", "score": 55.0, "flagged": 1, "previously_flagged": 0},
        {"unit_id": "D", "score": 95.0, "flagged": 0, "previously_flagged": 1},
        {"unit_id": "E", "score": 99.0, "flagged": 0, "previously_flagged": 0},
    ]
    lists = flagged_lists(rows)
    assert {name: [r["unit_id"] for r in found] for name, found in lists.items()} == {
        "entered": ["B", "C"], "left": ["D"], "still": ["A"],
    }  # fmt: skip
