"""Window state rebuilt from stored events (pingan.streams.rebuild): the state an undisturbed worker holds. No I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson

from pingan.index.scoring import load_config
from pingan.settings import Settings
from pingan.streams.pipeline import BatchResult, PipelineConfig, Record, process_batch
from pingan.streams.rebuild import StoredEvent, newest_event_floors, rebuild_state, replay_span_seconds
from pingan.streams.windows import PartitionState, WindowSpec
from tests.unit.test_pipeline import GRIDS, call, ms

INDEX = load_config(Settings().risk_config_path)
SPEC = WindowSpec(300, 3600, 120, INDEX.quiet_windows, 10)
CONFIG = PipelineConfig(index=INDEX, partitions=1)
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=12)


def _stored(document: dict) -> StoredEvent:
    at = datetime.fromisoformat(document["event_time"])
    return StoredEvent(document["event_id"], document["grid_id"], document["source"], document["type"],
                       document["severity"], ms(at))  # fmt: skip


def _stream(count: int, seconds_apart: int, seed: int = 7) -> list[dict]:
    """A busy stream: bursts on G1 (so it leaves green), a trickle on G2 and G3, a few seconds of disorder."""
    rng = random.Random(seed)
    documents = []
    for i in range(count):
        at = T0 + timedelta(seconds=i * seconds_apart - rng.randint(0, 20))
        grid = "G1" if i % 3 == 0 or 150 < i < 260 else rng.choice(["G2", "G3"])
        documents.append(call(f"e-{i}", grid, at, rng.choice(["criminal", "dispute"]), rng.randint(1, 4)))
    return documents


def _records(documents: list[dict], first_offset: int) -> list[Record]:
    return [Record("events", 0, first_offset + i, None, orjson.dumps(d), None) for i, d in enumerate(documents)]


def _run(documents: list[dict], state: PartitionState, first_offset: int, batch: int = 37) -> list[BatchResult]:
    records = _records(documents, first_offset)
    return [process_batch(records[i : i + batch], state, GRIDS, CONFIG, now=NOW) for i in range(0, len(records), batch)]


def _counts(state: PartitionState) -> dict[str, dict[int, dict]]:
    return {grid: {start: dict(b.counts) for start, b in buckets.items()} for grid, buckets in state.buckets.items()}


def test_the_replay_span_is_what_an_open_or_held_window_can_read() -> None:
    assert replay_span_seconds(WindowSpec(300, 3600, 120, 3, 10)) == 3600 + 120 + 3 * 300
    assert replay_span_seconds(WindowSpec(60, 600, 0, 0, 10)) == 600


def test_the_newest_event_is_looked_for_since_the_oldest_kept_bucket_then_over_the_baseline_history() -> None:
    # The demo's settings: an hour's window, 120 s lateness, two held windows; four weeks of baseline history.
    kept = 3600 + 120 + INDEX.quiet_windows * 300
    assert SPEC.kept_seconds == kept
    floors = newest_event_floors(SPEC, NOW, timedelta(weeks=4))
    assert floors == (NOW - timedelta(seconds=kept), NOW - timedelta(weeks=4))
    # A window longer than the history (a three-day hopping window): the kept span alone, never cut short.
    long = WindowSpec(3600, 3 * 86_400, 600, 2, 60)
    assert newest_event_floors(long, NOW, timedelta(days=2)) == (NOW - timedelta(seconds=3 * 86_400 + 600 + 7200),)


def test_stored_events_become_buckets_of_a_state_that_starts_the_new_log() -> None:
    rows = [
        StoredEvent("a", "G1", "call110", "criminal", 3, ms(T0 + timedelta(seconds=10))),
        StoredEvent("b", "G1", "call110", "criminal", 3, ms(T0 + timedelta(seconds=290))),
        StoredEvent("a", "G1", "call110", "criminal", 3, ms(T0 + timedelta(seconds=10))),  # stored twice
        StoredEvent("c", "G2", "call110", "dispute", 1, ms(T0 + timedelta(seconds=301))),
    ]
    state = rebuild_state(reversed(rows), SPEC, CONFIG)  # any order: replayed by event time
    start = int(T0.timestamp())
    assert _counts(state) == {"G1": {start: {("call110", "criminal", 3): 2}},
                              "G2": {start + 300: {("call110", "dispute", 1): 1}}}  # fmt: skip
    assert state.watermark_ms == ms(T0) + 301_000
    assert state.scored_ms == ms(T0) + 300_000 - 1  # the step the last event left
    # The old log's offsets are gone: a record at offset 0 of the new log is applied, not taken as a replay.
    assert state.done_offset == -1 and state.done_fingerprint == 0
    assert {b.applied_position for buckets in state.buckets.values() for b in buckets.values()} == {-1}
    assert state.touched == {("G1", start), ("G2", start + 300)}  # all of it goes to the new changelog
    assert state.pending == state.provisional == {"G2"}
    # The same event id again (a producer retry, or the new log re-delivering what was stored) counts once.
    outcome, _ = state.apply("G1", ms(T0 + timedelta(seconds=10)), ("call110", "criminal", 3), 0, "a")
    assert outcome == "duplicate"


def test_no_rows_no_state() -> None:
    state = rebuild_state([], SPEC, CONFIG)
    assert state.empty and state.watermark_ms == 0 and state.done_offset == -1


def test_the_rebuilt_state_scores_the_rest_of_the_stream_as_an_undisturbed_worker() -> None:
    # Six hours of history (most of it expired), then the log is lost; the stream goes on in a new log.
    before, after = _stream(400, 45), _stream(120, 45, seed=8)
    before.insert(300, call("late-1", "G1", T0 + timedelta(hours=2)))  # long after its window closed
    after = [dict(d, event_id=f"n-{i}", event_time=(datetime.fromisoformat(d["event_time"])
                                                   + timedelta(seconds=400 * 45)).isoformat())
             for i, d in enumerate(after)]  # fmt: skip
    reference = PartitionState(SPEC)
    late = {e.event_id for r in _run(before, reference, 0) for e in r.late}
    assert late == {"late-1"}  # stored, never counted: the rebuild must leave it out
    rows = [_stored(d) for d in before if d["event_id"] not in late]
    rebuilt = rebuild_state(random.Random(1).sample(rows, len(rows)), SPEC, CONFIG)

    assert _counts(rebuilt) == _counts(reference)
    assert rebuilt.watermark_ms == reference.watermark_ms and rebuilt.scored_ms == reference.scored_ms
    assert {g: (r.score, r.level) for g, r in rebuilt.risks.items()} == {
        g: (r.score, r.level) for g, r in reference.risks.items()
    }
    assert rebuilt.risks and {r.level for r in reference.risks.values()} - {"green"}, "make the stream busier"
    assert rebuilt.pending == reference.pending and rebuilt.rows_bucket == reference.rows_bucket

    # What both write for the rest of the stream: the new log starts at offset 0, the reference's goes on.
    mine = _run(after, rebuilt, 0, batch=50)
    theirs = _run(after, reference, len(before), batch=50)

    def written(results: list[BatchResult]) -> tuple[list, ...]:
        return ([u for r in results for u in r.risk_updates], [a for r in results for a in r.alerts],
                [u for r in results for u in r.live_updates], [w for r in results for w in r.window_rows],
                [len(r.stored) for r in results])  # fmt: skip

    assert written(mine) == written(theirs)
    assert sum(r.applied + len(r.late) for r in mine) == len(after)
