"""The alert_actions table and the handling-figures SQL of docs/analysts.md on ClickHouse 18.16 and current
ClickHouse (chdb): actions round-trip exactly, copies of one action id count once, and the SQL gives the
figures the API computes from the same known action times."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chdb.session import Session

from pingan.api.incidents import escalation_alert, policy_from
from pingan.grids import GridRegistry
from pingan.incidents import Action, AlertFact, dedupe, fold, handling_figures
from pingan.index.alerts import UNACKNOWLEDGED, Alert
from pingan.settings import Settings
from pingan.store import alert_actions, alerts, grid_units
from pingan.store.client import Executor
from pingan.store.migrate import migrate
from tests.support.chdb_executor import ChdbExecutor

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SETTINGS = Settings(incident_red_ack_seconds=300, incident_orange_ack_seconds=900)
REGISTRY = GridRegistry.load(SETTINGS.grid_registry_path)


def handling_sql() -> str:
    [sql] = re.findall(r"```sql\n-- handling: handling_figures\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return sql.strip()


@pytest.fixture
def chdb_executor(chdb_session: Session) -> ChdbExecutor:
    return ChdbExecutor(chdb_session, database=f"incidents_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["clickhouse-18.16", "chdb"])
def engine(request: pytest.FixtureRequest) -> Executor:
    executor = request.getfixturevalue("server_executor" if request.param == "clickhouse-18.16" else "chdb_executor")
    migrate(executor)
    return executor


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_actions_round_trip_and_copies_count_once(engine: Executor) -> None:
    action = Action("a-1", "G:1", "PA01-C01-G01", "resolve", "mingxi", at(61.25), note="打架 \"quoted\" 'x'\nok",
                    outcome="handled", actor_scope="PA01-C01", incident_id="G:1")  # fmt: skip
    retry = Action("a-1", "G:1", "PA01-C01-G01", "resolve", "mingxi", at(63.5), note=action.note, outcome="handled",
                   actor_scope="PA01-C01", incident_id="G:1")  # fmt: skip
    alert_actions.insert(engine, [action])
    alert_actions.insert(engine, [retry])
    assert dedupe(alert_actions.all_actions(engine)) == [action]
    assert sorted(a.at for a in alert_actions.by_id(engine, "a-1")) == [at(61.25), at(63.5)]
    assert alert_actions.by_id(engine, "other") == []


def _scenario() -> tuple[list[AlertFact], list[Action]]:
    c1 = [g.grid_id for g in REGISTRY.grids if g.community_id == "PA01-C01"][:4]
    c2 = next(g.grid_id for g in REGISTRY.grids if g.community_id == "PA01-C02")
    opened = {"i1": (c1[0], 0), "i2": (c1[1], 10_000), "i3": (c1[2], 20_000), "i4": (c1[3], 30_000), "i5": (c2, 0)}
    facts = [AlertFact(f"{grid}:{seconds}", grid, "red", at(seconds)) for grid, seconds in opened.values()]
    ids = {name: f"{grid}:{seconds}" for name, (grid, seconds) in opened.items()}

    def act(n: int, name: str, kind: str, seconds: float, **fields: str) -> Action:
        grid = opened[name][0]
        return Action(f"x{n}", ids[name], grid, kind, "centre", at(seconds), incident_id=ids[name], **fields)

    actions = [
        act(1, "i1", "acknowledge", 60.5), act(2, "i1", "resolve", 600, note="ok", outcome="handled"),
        act(3, "i2", "acknowledge", 10_120), act(4, "i2", "resolve", 11_200, note="ok", outcome="handled"),
        act(5, "i2", "reopen", 11_500, note="back"), act(6, "i2", "resolve", 11_790, note="ok", outcome="handled"),
        act(7, "i3", "acknowledge", 20_400), act(8, "i3", "resolve", 23_000, note="ok", outcome="referred"),
        act(9, "i4", "acknowledge", 30_030),
    ]  # fmt: skip
    return facts, actions


def test_the_documented_handling_sql_equals_the_api_figures(engine: Executor) -> None:
    facts, actions = _scenario()
    policy = policy_from(SETTINGS)
    now = at(40_000)
    book = fold(facts, actions, policy, now, lambda g: {"community": REGISTRY.get(g).community_id,  # type: ignore[union-attr]
                                                        "subdistrict": "PA01", "district": "PA"})  # fmt: skip
    stored = [Alert(f.grid_id, "escalation", "red", "yellow", 160.0, f.as_of, int(f.as_of.timestamp() * 1000),
                           {}, "t") for f in facts]  # fmt: skip
    # the worker's alert ids are grid:version; the scenario's are grid:seconds, so store them under their own ids
    rows = [(f.alert_id, *row[1:]) for f, row in zip(facts, (alerts.row(a) for a in stored), strict=True)]
    engine.insert("alerts", alerts.COLUMNS, rows)
    escalations = [escalation_alert(i, s.at, s.from_level, s.to_level, s.unit_id, 300) for i in book.incidents.values()
                   for s in i.escalations]  # fmt: skip
    assert not alerts.insert(engine, escalations)
    alert_actions.insert(engine, actions)
    alert_actions.insert(engine, actions[:3])  # a replay of the topic: copies count once
    grid_units.sync(engine, REGISTRY, now=now)

    # the incident desk's reads (api/incidents.py) on this engine
    assert {fact[0] for fact in alerts.escalation_facts(engine)} == {f.alert_id for f in facts}
    assert alerts.stored_ids(engine, UNACKNOWLEDGED) == {a.alert_id for a in escalations}
    assert len(escalations) == 3  # i3 acknowledged late: one step; i5 never: subdistrict, then district
    found = alerts.by_id(engine, facts[0].alert_id)
    assert found is not None and (found["grid_id"], found["level"]) == (facts[0].grid_id, "red")

    expected = handling_figures(book.incidents.values(), lambda i: i.scope_units["community"], T0, now)
    got = engine.query(handling_sql(), {"start": T0, "end": now})
    assert [tuple(f.as_dict().values()) for f in expected.values()] == got
    assert [row[0] for row in got] == ["PA01-C01", "PA01-C02"]
