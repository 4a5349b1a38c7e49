"""The incident fold (pingan/incidents.py): states, escalation of unacknowledged incidents, idempotent actions
and the handling figures, with exact expected outputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pingan.incidents import (
    Action,
    AlertFact,
    IncidentPolicy,
    dedupe,
    fold,
    handling_figures,
    rank_quantile,
    request_problem,
)

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
POLICY = IncidentPolicy({"red": 300, "orange": 900})
UNITS = {
    "G1": {"community": "C1", "subdistrict": "S1", "district": "D"},
    "G2": {"community": "C2", "subdistrict": "S1", "district": "D"},
}


def units(grid_id: str) -> dict[str, str]:
    return UNITS[grid_id]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def alert(alert_id: str, grid_id: str = "G1", level: str = "red", seconds: float = 0) -> AlertFact:
    return AlertFact(alert_id, grid_id, level, at(seconds))


def action(action_id: str, kind: str, seconds: float, alert_id: str = "a1", **fields: str) -> Action:
    return Action(action_id, alert_id, "G1", kind, fields.pop("actor", "c1-centre"), at(seconds), **fields)


def test_the_lifecycle_open_acknowledged_dispatched_resolved_with_times() -> None:
    actions = [
        action("x1", "acknowledge", 40),
        action("x2", "dispatch", 70, assignee="grid-worker-7"),
        action("x3", "note", 100, note="on site"),
        action("x4", "resolve", 400, note="dispute settled", outcome="handled"),
    ]
    book = fold([alert("a1")], actions, POLICY, at(1000), units)
    incident = book.incidents["a1"]
    assert incident.status == "resolved"
    assert (incident.acknowledged_at, incident.dispatched_at, incident.resolved_at) == (at(40), at(70), at(400))
    assert (incident.dispatched_to, incident.outcome, incident.feedback) == (
        "grid-worker-7",
        "handled",
        "dispute settled",
    )
    assert incident.escalations == []  # acknowledged after 40 s of the 300 allowed
    assert [(e.action.kind, e.applied) for e in incident.history] == [
        ("acknowledge", True), ("dispatch", True), ("note", True), ("resolve", True),
    ]  # fmt: skip


def test_an_unacknowledged_incident_passes_up_a_level_each_wait_and_stops_at_the_district() -> None:
    book = fold([alert("a1")], [], POLICY, at(299), units)
    assert book.incidents["a1"].responsible_level == "community"
    book = fold([alert("a1")], [], POLICY, at(300), units)
    incident = book.incidents["a1"]
    assert (incident.responsible_level, incident.responsible_unit) == ("subdistrict", "S1")
    assert [(e.at, e.from_level, e.to_level, e.unit_id) for e in incident.escalations] == [
        (at(300), "community", "subdistrict", "S1")
    ]
    book = fold([alert("a1")], [], POLICY, at(10_000), units)
    assert [(e.at, e.to_level) for e in book.incidents["a1"].escalations] == [
        (at(300), "subdistrict"), (at(600), "district"),
    ]  # fmt: skip


def test_an_acknowledgement_before_the_deadline_stops_escalation_and_one_after_it_does_not_undo_it() -> None:
    early = fold([alert("a1")], [action("x1", "acknowledge", 299)], POLICY, at(5000), units)
    assert early.incidents["a1"].escalations == []
    late = fold([alert("a1")], [action("x1", "acknowledge", 301)], POLICY, at(5000), units)
    incident = late.incidents["a1"]
    assert [e.to_level for e in incident.escalations] == ["subdistrict"]
    assert (incident.status, incident.responsible_level) == ("acknowledged", "subdistrict")


def test_orange_waits_longer_and_a_red_alert_joining_the_incident_shortens_the_wait() -> None:
    orange = [alert("a1", level="orange")]
    assert fold(orange, [], POLICY, at(899), units).incidents["a1"].escalations == []
    assert [e.at for e in fold(orange, [], POLICY, at(900), units).incidents["a1"].escalations] == [at(900)]
    joined = fold([*orange, alert("a2", level="red", seconds=60)], [], POLICY, at(400), units)
    incident = joined.incidents["a1"]
    assert (incident.level, incident.alert_ids) == ("red", ["a1", "a2"])
    assert joined.incident_of["a2"] == "a1"
    assert [e.at for e in incident.escalations] == [at(300)]  # red's 300 s from the incident's opening


def test_a_further_escalation_after_resolution_opens_a_new_incident() -> None:
    actions = [action("x1", "resolve", 50, note="ok", outcome="false_alarm")]
    book = fold([alert("a1"), alert("a2", seconds=100)], actions, POLICY, at(200), units)
    assert sorted(book.incidents) == ["a1", "a2"]
    assert (book.incidents["a1"].status, book.incidents["a2"].status) == ("resolved", "open")


def test_concurrent_acknowledgements_both_kept_the_first_applies() -> None:
    actions = [action("x2", "acknowledge", 30, actor="s1-centre"), action("x1", "acknowledge", 30)]
    incident = fold([alert("a1")], actions, POLICY, at(100), units).incidents["a1"]
    assert [(e.action.action_id, e.applied, e.reason) for e in incident.history] == [
        ("x1", True, ""),
        ("x2", False, "acknowledge is not possible when the incident is acknowledged"),
    ]
    assert incident.acknowledged_at == at(30)


def test_reopen_counts_and_restarts_the_wait_and_merge_points_at_the_other_incident() -> None:
    actions = [
        action("x1", "acknowledge", 10),
        action("x2", "resolve", 20, note="done", outcome="handled"),
        action("x3", "reopen", 100, note="came back"),
    ]
    incident = fold([alert("a1")], actions, POLICY, at(399), units).incidents["a1"]
    assert (incident.status, incident.reopened, incident.escalations) == ("open", 1, [])
    incident = fold([alert("a1")], actions, POLICY, at(400), units).incidents["a1"]
    assert [e.at for e in incident.escalations] == [at(400)]  # 300 s after the reopen

    merged = fold(
        [alert("a1"), alert("b1", "G2", seconds=5)],
        [action("m1", "merge", 30, alert_id="b1", target="a1")],
        POLICY, at(100), units,
    )  # fmt: skip
    assert (merged.incidents["b1"].status, merged.incidents["b1"].merged_into) == ("merged", "a1")


def test_actions_on_unknown_alerts_and_green_alerts_are_ignored() -> None:
    book = fold([AlertFact("y", "G1", "yellow", T0)], [action("x1", "acknowledge", 1, alert_id="nope")], POLICY,
                at(10), units)  # fmt: skip
    assert book.incidents == {}


def test_an_action_before_its_alert_event_time_counts_from_the_alert() -> None:
    early = Action("x1", "a1", "G1", "acknowledge", "c1", at(-30))  # the API's clock behind the event time
    incident = fold([alert("a1")], [early], POLICY, at(100), units).incidents["a1"]
    assert (incident.status, incident.acknowledged_at) == ("acknowledged", at(0))


def test_request_problems_name_the_field() -> None:
    assert request_problem(action("x", "assign", 1)) == (
        "assignee",
        "assign needs an assignee (a unit id or a grid worker)",
    )
    assert request_problem(action("x", "resolve", 1, note="n"))[0] == "outcome"  # type: ignore[index]
    assert request_problem(action("x", "resolve", 1, outcome="handled"))[0] == "note"  # type: ignore[index]
    assert request_problem(action("x", "jump", 1))[0] == "kind"  # type: ignore[index]
    assert request_problem(action("x", "acknowledge", 1)) is None


def test_dedupe_keeps_the_earliest_copy_of_each_id() -> None:
    first, retry = action("x1", "acknowledge", 10), action("x1", "acknowledge", 12)
    assert dedupe([retry, first, retry]) == [first]


ACTION_PLAN = st.lists(
    st.tuples(
        st.sampled_from(["acknowledge", "assign", "dispatch", "resolve", "reopen", "note"]),
        st.integers(min_value=0, max_value=2000),
        st.sampled_from(["a1", "a2", "b1"]),
    ),
    max_size=12,
)


def _actions(plan: list[tuple[str, int, str]]) -> list[Action]:
    return [
        Action(f"x{i}", alert_id, "G1" if alert_id != "b1" else "G2", kind, "c", at(seconds), note="n",
               assignee="w" if kind in ("assign", "dispatch") else "", outcome="handled" if kind == "resolve" else "")
        for i, (kind, seconds, alert_id) in enumerate(plan)
    ]  # fmt: skip


ALERTS = [alert("a1"), alert("a2", seconds=500), alert("b1", "G2", level="orange", seconds=100)]


def _outcome(book: object) -> list[dict]:
    return [incident.as_dict() for incident in sorted(book.incidents.values(), key=lambda i: i.incident_id)]  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None)
@given(ACTION_PLAN, st.randoms(use_true_random=False), st.data())
def test_the_fold_ignores_input_order_and_repeated_actions(plan, rng, data) -> None:
    actions = _actions(plan)
    expected = _outcome(fold(ALERTS, actions, POLICY, at(3000), units))
    shuffled = [*actions, *data.draw(st.lists(st.sampled_from(actions), max_size=5) if actions else st.just([]))]
    rng.shuffle(shuffled)
    alerts = list(ALERTS)
    rng.shuffle(alerts)
    assert _outcome(fold(alerts, shuffled, POLICY, at(3000), units)) == expected


@settings(max_examples=100, deadline=None)
@given(ACTION_PLAN, st.integers(min_value=0, max_value=3000), st.integers(min_value=0, max_value=3000))
def test_escalations_seen_earlier_stay_the_same_later(plan, earlier, later) -> None:
    """Replayable: folding later never changes an escalation that was due at an earlier fold."""
    earlier, later = sorted((earlier, later))
    actions = [a for a in _actions(plan) if a.at <= at(earlier)]
    before = fold(ALERTS, actions, POLICY, at(earlier), units)
    after = fold(ALERTS, actions, POLICY, at(later), units)
    for incident_id, incident in before.incidents.items():
        assert after.incidents[incident_id].escalations[: len(incident.escalations)] == incident.escalations


def test_rank_quantile_is_clickhouse_quantile_exact() -> None:
    assert rank_quantile([], 0.5) is None
    assert rank_quantile([30.0, 10.0, 20.0, 40.0], 0.5) == 30.0  # rank floor(4 * 0.5) = 2
    assert rank_quantile([30.0, 10.0, 20.0, 40.0], 0.9) == 40.0  # rank floor(3.6) = 3
    assert rank_quantile([5.0], 0.9) == 5.0


def test_handling_figures_from_known_action_times_equal_the_hand_computed_ones() -> None:
    """Community C1: four incidents; C2: one. Times in seconds from opening, computed by hand below."""
    alerts = [alert("a1", seconds=0), alert("a2", "G1", seconds=10_000), alert("a3", "G1", seconds=20_000),
              alert("a4", "G1", seconds=30_000), alert("b1", "G2", seconds=0)]  # fmt: skip
    actions = [
        # a1: acknowledged after 60 s, resolved after 600 s
        action("1", "acknowledge", 60),
        action("2", "resolve", 600, note="ok", outcome="handled"),
        # a2: acknowledged after 120 s, resolved after 1200 s, reopened after 1500 s and resolved again (first
        # resolution counts)
        action("3", "acknowledge", 10_120, alert_id="a2"),
        action("4", "resolve", 11_200, alert_id="a2", note="ok", outcome="handled"),
        action("5", "reopen", 11_500, alert_id="a2", note="back"),
        action("6", "resolve", 11_790, alert_id="a2", note="ok", outcome="handled"),
        # a3: nobody acknowledges for 400 s (escalated at 300 s), resolved after 3000 s
        action("7", "acknowledge", 20_400, alert_id="a3"),
        action("8", "resolve", 23_000, alert_id="a3", note="ok", outcome="referred"),
        # a4: acknowledged after 30 s, still open at the end
        action("9", "acknowledge", 30_030, alert_id="a4"),
    ]
    book = fold(alerts, actions, POLICY, at(40_000), units)
    figures = handling_figures(book.incidents.values(), lambda i: i.scope_units["community"], T0, at(40_000))
    c1 = figures["C1"]
    # acknowledge: [30, 60, 120, 400] -> median rank 2 = 120, p90 rank 3 = 400
    # resolve: [600, 1200, 3000] -> median rank 1 = 1200, p90 rank 2 = 3000
    assert c1.as_dict() == {
        "unit_id": "C1", "incidents": 4, "acknowledged": 4, "resolved": 3,
        "ack_median_seconds": 120.0, "ack_p90_seconds": 400.0,
        "resolve_median_seconds": 1200.0, "resolve_p90_seconds": 3000.0,
        "escalated_share": 0.25, "reopened_share": 0.25,
    }  # fmt: skip
    # b1 was never acknowledged: escalated twice (subdistrict, district), no times
    assert figures["C2"].as_dict() == {
        "unit_id": "C2", "incidents": 1, "acknowledged": 0, "resolved": 0, "ack_median_seconds": None,
        "ack_p90_seconds": None, "resolve_median_seconds": None, "resolve_p90_seconds": None,
        "escalated_share": 1.0, "reopened_share": 0.0,
    }  # fmt: skip
    # the period decides by opening time: only a3 and a4 open from 20,000 s
    later = handling_figures(book.incidents.values(), lambda i: i.scope_units["community"], at(20_000), at(40_000))
    assert (later["C1"].incidents, later["C1"].ack_median_seconds) == (2, 400.0)
