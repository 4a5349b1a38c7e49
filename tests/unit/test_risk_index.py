"""The index maths, pinned with hand-computed cases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pingan.errors import ConfigError
from pingan.index.levels import Level
from pingan.index.scoring import assess, level_for, load_config, parse_config, sub_index

CALL_BREAKPOINTS = ((0.0, 0.0), (3.0, 50.0), (8.0, 100.0), (16.0, 150.0), (32.0, 200.0))


def _document(**overrides: object) -> dict:
    document = {
        "version": "test-1",
        "levels": {"yellow": 50, "orange": 100, "red": 150},
        "severity_multiplier": {"1": 0.5, "3": 1.0, "5": 2.0},
        "sources": {
            "call110": {
                "default_weight": 1.0,
                "breakpoints": [list(p) for p in CALL_BREAKPOINTS],
                "type_weights": {"criminal": 3.0, "help": 0.5},
            },
            "camera": {
                "default_weight": 0.5,
                "breakpoints": [[0, 0], [10, 50], [25, 100], [50, 150]],
                "type_weights": {"fight": 4.0},
            },
        },
    }
    document.update(overrides)
    return document


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0.0, 0.0),
        (-1.0, 0.0),
        (1.5, 25.0),  # half-way up the first segment
        (3.0, 50.0),  # exactly on a breakpoint
        (5.5, 75.0),  # half-way up the second segment
        (16.0, 150.0),
        (24.0, 175.0),
        (40.0, 225.0),  # beyond the last breakpoint the last segment extends: 200 + 8 * 50/16
    ],
)
def test_sub_index_interpolates_between_breakpoints(count: float, expected: float) -> None:
    assert sub_index(count, CALL_BREAKPOINTS) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("score", "level"),
    [(0.0, Level.GREEN), (49.9, Level.GREEN), (50.0, Level.YELLOW), (99.99, Level.YELLOW), (100.0, Level.ORANGE),
     (149.9, Level.ORANGE), (150.0, Level.RED), (900.0, Level.RED)],
)  # fmt: skip
def test_level_bands(score: float, level: Level) -> None:
    assert level_for(score, parse_config(_document())) is level


def test_score_is_the_highest_sub_index_and_names_its_source() -> None:
    config = parse_config(_document())
    # call110: 1 criminal at severity 3 -> 3.0 weighted -> 50.0
    # camera: 5 fights at severity 3 -> 20.0 weighted -> 50 + 10 * 50/15 = 83.3
    assessment = assess({("call110", "criminal", 3): 1, ("camera", "fight", 3): 5}, config)
    assert assessment.sub_indices == {"call110": 50.0, "camera": 83.3}
    assert assessment.score == 83.3
    assert assessment.dominant_source == "camera"
    assert assessment.level is Level.YELLOW
    assert assessment.window_events == 6


def test_severity_and_type_weights_multiply() -> None:
    config = parse_config(_document())
    # criminal (3.0) at severity 5 (x2.0) = 6.0 each; 2 of them = 12.0 -> 100 + 4 * 50/8 = 125.0 (orange)
    assert assess({("call110", "criminal", 5): 2}, config).score == 125.0
    # an unlisted type takes the default weight (1.0) and an unlisted severity multiplies by 1.0
    assert assess({("call110", "dispute", 4): 3}, config).score == 50.0
    # help (0.5) at severity 1 (x0.5) = 0.25
    assert config.event_weight("call110", "help", 1) == 0.25


def test_a_changed_copy_of_a_config_scores_with_its_own_weights_and_breakpoints() -> None:
    # The config remembers its answers (weights, sources' sub-indices): a copy made with dataclasses.replace
    # must not inherit them.
    config = parse_config(_document())
    counts = {("call110", "criminal", 3): 1}
    assert (config.event_weight("call110", "criminal", 3), assess(counts, config).score) == (3.0, 50.0)
    heavier = replace(config, severity_multiplier={3: 2.0})
    assert (heavier.event_weight("call110", "criminal", 3), assess(counts, heavier).score) == (
        6.0,
        80.0,
    )  # 50 + 3 * 50 / 5: past the 2nd point
    steeper = replace(
        config,
        sources={
            **config.sources,
            "call110": replace(config.sources["call110"], breakpoints=((0.0, 0.0), (3.0, 90.0))),
        },
    )
    assert assess(counts, steeper).score == 90.0
    assert assess(counts, config).score == 50.0


def test_the_heaviest_types_are_worked_out_when_asked_for() -> None:
    config = parse_config(_document())
    assessment = assess({("call110", "criminal", 3): 1, ("camera", "fight", 3): 5, ("camera", "crowd", 1): 2}, config)
    assert assessment.top_types == (("camera/fight", 20.0, 5), ("call110/criminal", 3.0, 1), ("camera/crowd", 0.5, 2))
    assert assessment == assess(dict(assessment.counts), config)


def test_unknown_sources_and_empty_windows_score_zero() -> None:
    config = parse_config(_document())
    empty = assess({}, config)
    assert (empty.score, empty.level, empty.dominant_source, empty.window_events) == (0.0, Level.GREEN, "", 0)
    unknown = assess({("drone", "sighting", 3): 50}, config)
    assert (unknown.score, unknown.level, unknown.window_events) == (0.0, Level.GREEN, 50)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"levels": {"yellow": 100, "orange": 50, "red": 150}}, "0 < yellow < orange < red"),
        ({"sources": {"call110": {"breakpoints": [[0, 0]]}}}, "at least two points"),
        ({"sources": {"call110": {"breakpoints": [[0, 0], [5, 50], [4, 100]]}}}, "increase strictly"),
        ({"sources": {"call110": {"breakpoints": [[1, 0], [5, 50]]}}}, "start at [0, 0]"),
        ({"sources": {"call110": {"breakpoints": "nope"}}}, "must be [[value, index]"),
        ({"levels": {"yellow": 1}}, "missing"),
        ({"corroboration": {"orange": 3, "red": 2}}, "1 <= orange <= red"),
        ({"corroboration": {"orange": 0}}, "1 <= orange <= red"),
        ({"surprise": {"breakpoints": [[0, 0], [2, 50], [1, 100]]}}, "surprise.breakpoints must increase"),
    ],
)
def test_bad_config_is_rejected_with_the_reason(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_config(_document(**override))


def test_shipped_config_loads_and_covers_the_four_feeds(settings, tmp_path) -> None:
    config = load_config(settings.risk_config_path)
    assert set(config.sources) >= {"call110", "camera", "checkpoint", "app_report"}
    assert config.version
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("version = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_one_event_is_never_an_alarm_however_heavy() -> None:
    """Corroboration: orange needs two events of the source, red three; until then just below the band."""
    # A steep line, so that one event would be red: 1 weighted = 100, 2 = 150, 4 = 200, then +25 per unit.
    # Events that weigh nothing (40 "noise" calls) corroborate nothing.
    big = parse_config(_document(corroboration={"orange": 2, "red": 3}, sources={
        "call110": {"default_weight": 1.0, "breakpoints": [[0, 0], [1, 100], [2, 150], [4, 200]],
                    "type_weights": {"criminal": 3.0, "noise": 0.0}},
    }))  # fmt: skip
    one = assess({("call110", "criminal", 3): 1, ("call110", "noise", 3): 40}, big)
    detail = one.sources["call110"]
    # 3.0 weighted -> 175 on the line, held at 99.9: one weighted event is not corroborated for orange
    assert (detail.volume_index, detail.sub_index, detail.events, detail.uncorroborated) == (175.0, 99.9, 1, True)
    assert one.level is Level.YELLOW
    two = assess({("call110", "criminal", 3): 2}, big).sources["call110"]  # 6.0 -> 250, held below red: 149.9
    assert (two.sub_index, two.uncorroborated) == (149.9, True)
    three = assess({("call110", "criminal", 3): 3}, big).sources["call110"]  # 9.0 -> 200 + 5 * 25 = 325
    assert (three.sub_index, three.uncorroborated) == (325.0, False)
    assert assess({("call110", "criminal", 3): 3}, big).level is Level.RED
