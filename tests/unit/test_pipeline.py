"""The batch pipeline: validation, routing, windows and scoring, replay after a crash. No I/O."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pingan.partitioning import partition_for_key
from pingan.streams.pipeline import PipelineConfig, Record, process_batch
from pingan.streams.windows import LOG_SCORE_STEP, PartitionState, WindowSpec
from tests.support.defaults import shipped_index

INDEX = shipped_index()
SPEC = WindowSpec(300, 3600, 120, INDEX.quiet_windows)
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Box:
    grid_id: str
    lon0: float
    lat0: float
    lon1: float
    lat1: float


class Grids:
    """A stand-in registry of rectangles."""

    def __init__(self, *boxes: Box) -> None:
        self.boxes = {b.grid_id: b for b in boxes}

    def get(self, grid_id: str) -> Box | None:
        return self.boxes.get(grid_id)

    def locate(self, lon: float, lat: float) -> Box | None:
        for box in self.boxes.values():
            if box.lon0 <= lon < box.lon1 and box.lat0 <= lat < box.lat1:
                return box
        return None


GRIDS = Grids(Box("G1", 0, 0, 1, 1), Box("G2", 1, 0, 2, 1), Box("G3", 2, 0, 3, 1))


def call(event_id: str, grid: str | None, at: datetime, category: str = "criminal", severity: int = 3, **extra):
    document = {
        "event_id": event_id,
        "source": "call110",
        "type": category,
        "severity": severity,
        "event_time": at.isoformat(),
        "payload": {"incident_id": event_id, "category": category, "priority": 1, "reported_at": at.isoformat()},
    }
    if grid is not None:
        document["grid_id"] = grid
    document.update(extra)
    return document


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def records(*documents, partition: int = 0, start_offset: int = 0) -> list[Record]:
    out = []
    for i, document in enumerate(documents):
        value = document if isinstance(document, bytes) else orjson.dumps(document)
        out.append(Record("events", partition, start_offset + i, None, value, None))
    return out


def run(batch: list[Record], state: PartitionState | None = None, partitions: int = 1, now: datetime | None = None):
    state = state or PartitionState(SPEC)
    config = PipelineConfig(index=INDEX, partitions=partitions)
    return process_batch(batch, state, GRIDS, config, now=now or T0 + timedelta(hours=2)), state


def test_valid_events_are_stored_windowed_and_scored() -> None:
    at = T0 + timedelta(minutes=1)
    result, state = run(records(*(call(f"e{i}", "G1", at) for i in range(3)), call("e3", "G2", at, "help")))
    assert [e.event_id for e, _, late in result.stored if not late] == ["e0", "e1", "e2", "e3"]
    assert result.applied == 4 and not result.dead_letters and not result.late
    # The step of event time (10 s) has not ended: the map gets provisional values, the log nothing yet.
    assert result.risk_updates == [] and result.alerts == []
    # G1: 3 criminal calls at severity 3 = 9.0 weighted -> 100 + 4 * 50/9 = 122.2 (orange); no baseline here
    g1 = next(u for u in result.live_updates if u.grid_id == "G1")
    assert (g1.score, g1.level, g1.provisional, g1.version) == (122.2, "orange", True, ms(at))
    window = next(w for w in result.window_rows if w.grid_id == "G1")
    assert (window.window_start, window.events, window.weighted, window.level) == (T0, 3, 9.0, "orange")
    assert window.type_counts == {"call110/criminal": 3}
    assert state.watermark_ms == ms(at)
    # An event in a later step ends the step: its risk is decided (as of the step's end) and alerted.
    result, state = run(records(call("e4", "G3", at + timedelta(seconds=10), "help"), start_offset=4), state)
    step_end = at + timedelta(seconds=10)
    g1 = next(u for u in result.risk_updates if u.grid_id == "G1")
    assert (g1.score, g1.level, g1.previous_level, g1.dominant_source) == (122.2, "orange", "", "call110")
    assert (g1.window_events, g1.as_of, g1.version, g1.provisional) == (3, step_end, ms(step_end), False)
    # G2: one "help" call = 0.3 weighted -> 5.0 (green, but a change from nothing)
    g2 = next(u for u in result.risk_updates if u.grid_id == "G2")
    assert (g2.score, g2.level) == (5.0, "green")
    [alert] = result.alerts
    assert (alert.grid_id, alert.kind, alert.level) == ("G1", "escalation", "orange")
    assert alert.alert_id == f"G1:{ms(step_end)}"  # the grid and the step: the same however batches fall
    # G1 and G2 are decided (their rows supersede the provisional ones); G3's own event waits for its step
    assert {u.grid_id for u in result.live_updates} == {"G3"}


def test_location_only_events_are_assigned_by_point_in_polygon() -> None:
    result, _ = run(records(call("e1", None, T0, location={"lon": 1.5, "lat": 0.5})))
    assert [e.grid_id for e, _, _ in result.stored] == ["G2"]


@pytest.mark.parametrize(
    ("raw", "kind", "field"),
    [
        (b"{not json", "bad_json", ""),
        (orjson.dumps({**call("x", "G1", T0), "source": "drone"}), "unknown_source", "source"),
        (orjson.dumps({k: v for k, v in call("x", "G1", T0).items() if k != "event_time"}), "missing_field",
         "event_time"),
        (orjson.dumps(call("x", None, T0, location={"lon": 181.0, "lat": 0.5})), "out_of_range", "location.lon"),
        (orjson.dumps(call("x", "G1", T0 + timedelta(days=1))), "future_timestamp", "event_time"),
        (orjson.dumps(call("x", "G1", T0, note="x" * 70_000)), "oversize", ""),
        (orjson.dumps(call("x", "G404", T0)), "unknown_grid", "grid_id"),
        (orjson.dumps(call("x", None, T0, location={"lon": 50.0, "lat": 0.5})), "outside_grids", "location"),
        (orjson.dumps({**call("x", "G1", T0), "payload": {"incident_id": "x"}}), "missing_field",
         "payload.category"),
    ],
)  # fmt: skip
def test_bad_records_become_dead_letters_with_reason_and_bytes(raw: bytes, kind: str, field: str) -> None:
    good = call("ok", "G1", T0)
    result, _ = run(records(good, raw, good | {"event_id": "ok2"}))
    assert [e.event_id for e, _, _ in result.stored] == ["ok", "ok2"]
    [letter] = result.dead_letters
    assert (letter.kind, letter.field, letter.offset, letter.raw) == (kind, field, 1, raw)
    assert letter.reason


def test_an_unexpected_error_costs_one_record_not_the_batch() -> None:
    class Exploding(Grids):
        def get(self, grid_id: str) -> Box | None:
            if grid_id == "G2":
                raise RuntimeError("boom")
            return super().get(grid_id)

    config = PipelineConfig(index=INDEX, partitions=1)
    batch = records(call("a", "G1", T0), call("b", "G2", T0), call("c", "G1", T0))
    result = process_batch(batch, PartitionState(SPEC), Exploding(*GRIDS.boxes.values()), config, now=T0)
    assert [e.event_id for e, _, _ in result.stored] == ["a", "c"]
    assert [(d.kind, d.offset) for d in result.dead_letters] == [("internal_error", 1)]
    assert "boom" in result.dead_letters[0].reason


def test_a_repeated_event_id_is_stored_again_but_counted_once() -> None:
    first = call("same", "G1", T0)
    result, state = run(records(first, first, call("other", "G1", T0)))
    assert [e.event_id for e, _, _ in result.stored] == ["same", "same", "other"]  # ClickHouse keeps one
    assert (result.applied, result.duplicates) == (2, 1)
    assert state.buckets["G1"][int(T0.timestamp())].events == 2


def test_late_events_are_kept_and_flagged_but_not_counted() -> None:
    batch = records(call("now", "G1", T0 + timedelta(minutes=30)), call("old", "G2", T0))
    result, state = run(batch)
    assert [(e.event_id, late) for e, _, late in result.stored] == [("now", False), ("old", True)]
    assert [e.event_id for e in result.late] == ["old"]
    assert "G2" not in state.buckets


def test_events_on_the_wrong_partition_are_rerouted_to_their_grids_partition() -> None:
    home = {g: partition_for_key(g.encode(), 4) for g in ("G1", "G2", "G3")}
    grid, partition = next((g, p) for g, p in home.items())
    stranger = next(g for g, p in home.items() if p != partition)
    batch = records(call("mine", grid, T0), call("theirs", stranger, T0), partition=partition)
    result, _ = run(batch, partitions=4)
    assert [e.event_id for e, _, _ in result.stored] == ["mine"]
    assert [(g, r.offset) for g, r in result.reroutes] == [(stranger, 1)]


def test_a_window_rescored_within_its_lateness_still_counts_the_start_of_its_hour() -> None:
    # G1: an incident in the first bucket of an hour, one call in its last bucket
    first = [call(f"a{i}", "G1", T0 + timedelta(seconds=i)) for i in range(4)]
    last_bucket = T0 + timedelta(minutes=55)
    result, state = run(records(*first, call("b", "G1", last_bucket + timedelta(seconds=1))))
    [row] = [r for r in result.window_rows if r.window_start == last_bucket]
    # the watermark enters the next bucket; the last bucket is still open for 2 more minutes
    result, state = run(records(call("x", "G2", T0 + timedelta(minutes=60, seconds=10)), start_offset=5), state)
    # a straggler for the last bucket re-scores it: the hour still includes the first bucket's calls
    result, state = run(records(call("c", "G1", last_bucket + timedelta(seconds=2)), start_offset=6), state)
    [again] = [r for r in result.window_rows if r.window_start == last_bucket]
    assert again.events == 2
    assert again.score > row.score  # 6 calls in the hour now, not 2


def test_decay_brings_a_quiet_grid_back_to_green_and_forgets_it() -> None:
    result, state = run(records(*(call(f"e{i}", "G1", T0) for i in range(4))))
    assert [u.level for u in result.live_updates] == ["orange"] and not result.risk_updates
    # 70 minutes later: decided orange at the end of T0's step; the calls leave the live hour at minute 60,
    # but the closed windows still hold them: orange, held, and the explanation says by what and until when
    result, state = run(records(call("x", "G2", T0 + timedelta(minutes=70)), start_offset=4), state)
    g1 = [u for u in result.risk_updates if u.grid_id == "G1"]
    assert [(u.level, u.live_level) for u in g1] == [("orange", "orange"), ("orange", "green")]
    assert g1[0].as_of == T0 + timedelta(seconds=10) and [a.kind for a in result.alerts] == ["escalation"]
    held = g1[-1]
    assert (held.score, held.held, held.as_of) == (0.0, True, T0 + timedelta(minutes=60, seconds=10))
    hold = held.explanation()["held_by"]
    # what holds it: the last closed window (the hour T0-5min..T0+55min, the four calls' score); the window
    # of the bucket at minute 55, still closing, holds orange too, so the colour steps down once the window
    # two buckets after it has closed: minute 55 + 15 + the 2-minute lateness allowance
    assert hold == {"window_start": (T0 - timedelta(minutes=5)).isoformat(),
                    "window_end": (T0 + timedelta(minutes=55)).isoformat(), "score": g1[0].score,
                    "level": "orange", "steps_down_at": (T0 + timedelta(minutes=72)).isoformat()}  # fmt: skip
    # 80 minutes later the last two closed windows are quiet too: green, and the grid is forgotten
    result, state = run(records(call("y", "G2", T0 + timedelta(minutes=80)), start_offset=5), state)
    g1 = next(u for u in result.risk_updates if u.grid_id == "G1")
    assert (g1.score, g1.level, g1.previous_level) == (0.0, "green", "orange")
    assert g1.as_of == T0 + timedelta(minutes=72, seconds=10)  # the step in which the hold ended
    assert [a.kind for a in result.alerts] == ["de-escalation"]
    assert "G1" not in state.buckets and "G1" not in state.risks
    t0 = int(T0.timestamp())
    # Records are keyed by the batch that wrote them (its last offset: 3, 4, 5). Forgetting writes a marker
    # before the watermark record (which proves the batch done), and deletes the older record, then the
    # marker, after it; the expired bucket written by the first batch goes after it too.
    t80 = t0 + 80 * 60
    assert [(key, value is None or value) for key, value in result.checkpoint] == [
        (f"b|G2|{t80}|5", state.buckets["G2"][t80].to_bytes()), ("r|G1|5", b""),
        ("r|G2|5", state.risks["G2"].to_bytes()), ("wm", result.checkpoint[3][1]),
        (f"b|G1|{t0}|3", True), ("r|G1|4", True), ("r|G1|5", True),
    ]  # fmt: skip


def _stream(n: int) -> list[Record]:
    """A deterministic mixed stream: three grids, out-of-order times, some late, some invalid."""
    docs: list[dict | bytes] = []
    for i in range(n):
        # three hours, mostly in order with up to 1.5 minutes of disorder, and now and then a far-late one
        minute = i * 180 / n - ((i * 37) % 16) / 10 - (20 if i % 11 == 0 else 0)
        grid = ("G1", "G2", "G3")[i % 3]
        category = ("criminal", "dispute", "help", "fire")[i % 4]
        if i % 17 == 0 and docs:
            docs.append(docs[-1])  # a producer retry: the same message again
            continue
        docs.append(b"garbage" if i % 13 == 0 else call(f"e{i}", grid, T0 + timedelta(minutes=minute), category))
    return records(*docs)


def _latest_rows(results) -> dict:
    """What ClickHouse keeps of grid_windows: per key the highest version, ties going to the last insert."""
    latest: dict = {}
    for result in results:
        for row in result.window_rows:
            key = (row.grid_id, row.window_start)
            if key not in latest or row.version >= latest[key].version:
                latest[key] = row
    return {key: (row.events, row.weighted, row.score, row.level) for key, row in latest.items()}


def _final(state: PartitionState) -> tuple:
    return (
        {g: {s: (b.counts, b.applied_position) for s, b in bs.items()} for g, bs in state.buckets.items()},
        {g: (r.score, r.level) for g, r in state.risks.items()},
        state.watermark_ms,
    )


@pytest.mark.parametrize("crash_after", [10, 37, 61])
@pytest.mark.parametrize(("persisted", "stored"), [(0, False), (0, True), (3, True), (1000, True)])
def test_a_crash_and_replay_counts_nothing_twice(crash_after: int, persisted: int, stored: bool) -> None:
    """Uninterrupted run vs: batches committed up to offset 20, a crash mid-way through a later batch with
    only a prefix of its checkpoint records persisted, restore, replay from the committed offset."""
    stream = _stream(400)
    uninterrupted = PartitionState(SPEC)
    expected_rows = set()
    expected_results = []
    for i in range(0, 400, 20):
        result, _ = run(stream[i : i + 20], uninterrupted)
        expected_rows |= {(e.event_id, r.offset, late) for e, r, late in result.stored}
        expected_results.append(result)

    committed = 20
    live = PartitionState(SPEC)
    changelog: dict[str, bytes | None] = {}
    first, _ = run(stream[:committed], live)
    changelog.update(first.checkpoint)
    crashed, _ = run(stream[committed:crash_after], live)
    changelog.update(crashed.checkpoint[:persisted])  # a prefix reached the changelog before the crash
    # The batch's ClickHouse insert precedes its checkpoint: if any checkpoint record exists, it happened;
    # with none, the crash came before or after it.
    stored_rows = {(e.event_id, r.offset, late) for e, r, late in first.stored}
    written = [first, crashed] if stored else [first]
    if stored:
        stored_rows |= {(e.event_id, r.offset, late) for e, r, late in crashed.stored}

    restored = PartitionState(SPEC)
    restored.restore((k, v) for k, v in changelog.items() if v is not None)
    for i in range(committed, 400, 15):  # other batch boundaries than the first run: results must not care
        result, _ = run(stream[i : i + 15], restored)
        stored_rows |= {(e.event_id, r.offset, late) for e, r, late in result.stored}
        written.append(result)
    assert _final(restored) == _final(uninterrupted)
    assert _latest_rows(written) == _latest_rows(expected_results)
    # the risk log and the alerts too: the crashed batch's decisions, written before its checkpoint, are
    # decided again by the replay under the same keys with the same values, and nothing else is
    assert _decided(written) == _decided(expected_results)
    assert _decided(written)[1]
    # every message stored, each with the lateness the uninterrupted run gave it (no conflicting rows)
    assert stored_rows == expected_rows


def test_a_hole_in_what_was_delivered_stops_the_batch_until_it_is_read_again() -> None:
    at = T0 + timedelta(minutes=1)
    # nothing done yet on the partition: where it starts is not a gap (retention, a committed start)
    result, state = run(records(call("a", "G1", at), start_offset=40))
    assert result.gaps == []
    # 41 and 42 never came: nothing from 43 on is processed, and done_offset stays at 40
    batch = [*records(call("b", "G1", at), start_offset=43), *records(call("c", "G1", at), start_offset=44)]
    result, state = run(batch, state)
    assert result.gaps == [(41, 42)] and result.stored == [] and state.done_offset == 40
    # read again from 41: everything arrives, in order, and is processed once
    again = [*records(call("x", "G1", at), start_offset=41), *records(call("y", "G1", at), start_offset=42), *batch]
    result, state = run(again, state)
    assert (result.gaps, [e.event_id for e, _, _ in result.stored]) == ([], ["x", "y", "b", "c"])
    assert state.done_offset == 44
    # a replay of what is done is no gap
    replay = records(call("c", "G1", at), start_offset=44) + records(call("e", "G1", at), start_offset=45)
    result, _ = run(replay, state)
    assert (result.gaps, result.skipped) == ([], 1)


def _decided(results) -> tuple[list, list]:
    """The risk log and the alerts, as ClickHouse keeps them: one row per key (the last one written)."""
    updates: dict = {}
    alerts: dict = {}
    for result in results:
        for u in result.risk_updates:
            updates[(u.grid_id, u.version)] = (u.score, u.level, u.previous_level, u.live_level, u.window_events,
                                               u.dominant_source, orjson.dumps(u.explanation()))  # fmt: skip
        for a in result.alerts:
            alerts[a.alert_id] = (a.kind, a.level, a.previous_level, a.score, a.as_of)
    return sorted(updates.items()), sorted(alerts.items())


def _replay(stream: list[Record], size: int) -> list:
    state = PartitionState(SPEC)
    now = T0 + timedelta(hours=6)
    return [run(stream[i : i + size], state, now=now)[0] for i in range(0, len(stream), size)]


def test_risk_updates_and_alerts_do_not_depend_on_batch_boundaries() -> None:
    # three busy hours, then two quiet ones in which every grid steps down
    quiet = [call(f"q{m}", "G3", T0 + timedelta(minutes=180 + m), "help") for m in range(0, 120, 7)]
    stream = _stream(400) + records(*quiet, start_offset=400)
    whole = _decided(_replay(stream, len(stream)))
    updates, alerts = whole
    assert len(updates) > 20 and {kind for kind, *_ in dict(alerts).values()} == {"escalation", "de-escalation"}
    for size in (1, 7, 100):
        results = _replay(stream, size)
        # every key written once: the batches never repeat or revise a decision
        assert sum(len(r.risk_updates) for r in results) == len(updates)
        assert _decided(results) == whole, f"batches of {size}"


def test_an_episode_that_rises_and_falls_within_one_batch_is_logged_and_alerted() -> None:
    """A red episode, up and back down, inside one batch spanning hours: every step of it is in the log."""
    burst = [call(f"b{i}", "G1", T0 + timedelta(minutes=1, seconds=i)) for i in range(8)]
    later = [call(f"q{m}", "G2", T0 + timedelta(minutes=m), "help") for m in range(5, 180, 5)]
    results = _replay(records(*burst, *later), 10_000)
    [result] = results
    levels = [(u.previous_level, u.level) for u in result.risk_updates if u.grid_id == "G1"]
    assert levels[0] == ("", "red") and levels[-1] == ("red", "green")
    assert [(a.kind, a.level) for a in result.alerts if a.grid_id == "G1"] == [("escalation", "red"),
                                                                             ("de-escalation", "green")]  # fmt: skip
    assert _decided(results) == _decided(_replay(records(*burst, *later), 1))


def test_history_has_every_scored_window_also_those_without_events_of_their_own() -> None:
    """An incident at T0, then nothing in its grid: the hour after still carries its score, window by window."""
    burst = [call(f"b{i}", "G1", T0 + timedelta(seconds=i)) for i in range(4)]
    later = [call(f"q{m}", "G2", T0 + timedelta(minutes=m), "help") for m in range(5, 90, 5)]
    results = _replay(records(*burst, *later), 3)
    rows = _latest_rows(results)
    g1 = {start: value for (grid, start), value in rows.items() if grid == "G1"}
    hour = [T0 + timedelta(minutes=m) for m in range(0, 60, 5)]
    assert sorted(g1) == hour  # the window of each bucket whose hour holds the calls, and no other
    assert g1[hour[0]][0] == 4 and all(events == 0 for events, *_ in (g1[h] for h in hour[1:]))
    assert {g1[h][2:] for h in hour} == {g1[hour[0]][2:]}  # same score and level all hour: the same four calls


def test_the_log_keeps_colour_source_and_ten_point_moves_and_the_map_gets_every_step() -> None:
    """A grid climbing slowly: the map gets a value at every batch; the risk log only colour or dominant-source
    changes and moves of LOG_SCORE_STEP or more from the last logged score."""
    climb = [call(f"c{i}", "G1", T0 + timedelta(seconds=20 * i), "help", severity=1) for i in range(90)]
    results = _replay(records(*climb), 1)  # a batch per event
    logged = [u for r in results for u in r.risk_updates]
    shown = [u for r in results for u in (*r.risk_updates, *r.live_updates)]
    assert len(logged) >= 2 and len(shown) > 3 * len(logged)  # small moves reached the map only
    assert len({u.score for u in shown}) > 2 * len(logged)
    for before, after in itertools.pairwise(logged):
        assert (
            after.level != before.level
            or after.dominant_source != before.dominant_source
            or abs(after.score - before.score) >= LOG_SCORE_STEP
        ), (before, after)
    for update in (u for r in results for u in r.live_updates if not u.provisional):
        # a decided value the map was shown but the log was not: within a step of the last logged one
        last = max((u for u in logged if u.version <= update.version), key=lambda u: u.version)
        assert update.level == last.level and abs(update.score - last.score) < LOG_SCORE_STEP
    # one batch: the same log, and the map gets only the grid's newest value, the same as batch by batch
    [whole] = _replay(records(*climb), 10_000)
    assert whole.risk_updates == logged and len(whole.live_updates) <= 1
    newest = max([*whole.risk_updates, *whole.live_updates], key=lambda u: u.version)
    assert newest == max(shown, key=lambda u: u.version)


class _Unmemoised(PartitionState):
    """Window state that reads every window afresh: what the memoised assessments must always equal."""

    def assess_hop(self, grid_id, end_bucket_start, config, baseline=None):
        self.forget_assessments()
        return super().assess_hop(grid_id, end_bucket_start, config, baseline)


def _everything(results) -> list:
    return [
        ([u.to_json() for u in r.risk_updates], [u.to_json() for u in r.live_updates], [repr(a) for a in r.alerts],
         [repr(w) for w in r.window_rows], r.checkpoint)
        for r in results
    ]  # fmt: skip


@pytest.mark.parametrize("size", [5, 60])
def test_assessments_remembered_across_batches_equal_windows_read_afresh(size: int) -> None:
    # The memos live as long as the state (dropped only when buckets expire): whatever they hold must be what a
    # fresh read of the buckets gives, through three busy hours, expiry and two quiet ones.
    quiet = [call(f"q{m}", "G3", T0 + timedelta(minutes=180 + m), "help") for m in range(0, 120, 7)]
    stream = _stream(400) + records(*quiet, start_offset=400)
    now = T0 + timedelta(hours=6)
    remembered, fresh = PartitionState(SPEC), _Unmemoised(SPEC)
    batches = [stream[i : i + size] for i in range(0, len(stream), size)]
    expected = _everything(run(batch, fresh, now=now)[0] for batch in batches)
    assert _everything(run(batch, remembered, now=now)[0] for batch in batches) == expected
    assert any(r[0] for r in expected) and any(r[2] for r in expected)  # it decided and alerted
