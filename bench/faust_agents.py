"""Two Faust agents on the bench's events topic, each in a process of its own: what Faust itself costs.

    python -m bench.faust_agents count|textbook --app-id ID --expected N --result PATH

Settings (broker, topic prefix, partitions, data dir, windows) come from the PINGAN_* environment, as for
`pingan worker`; ``bench.worker_throughput`` starts these with the same settings as the worker it measures.

count
    only counts ``stream.take_events(5000)`` batches, parsing each value with orjson; a batch record counts
    its envelopes. The ceiling of any design that keeps the Faust agent and its consumer.
textbook
    the agent a Faust tutorial would write: per event, one update of a hopping windowed Table keyed by grid
    (the product's windows: 5-minute buckets, a 1 h window advancing one bucket; times are the events' own).
    Faust writes every window an event falls in (12) to the table's changelog, as a real table must. Windowed
    tables cannot be updated inside ``take()``, so the stream is iterated per record; a batch record's
    envelopes are applied one by one. No validation and no de-duplication (a repeated event counts twice).

Each writes ``{"events", "seconds", ...}`` to ``--result`` once it has read ``--expected`` events (seconds from
the assignment of its partitions to the last event processed, see ``Progress.begin``); the textbook agent
adds its per-(grid, window start) counts, which the caller checks against the counts it expects from the
stream it wrote (``check_windows``). Then it idles until stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import orjson

from bench.workload import is_unreadable
from pingan.schemas.batch import is_batch
from pingan.settings import Settings
from pingan.streams.app import faust_app
from pingan.streams.stopping import PromptWorker
from tests.support.processes import ChildProcess, wait_for

TAKE_EVENTS = 5000
TAKE_WITHIN_S = 0.5


def events_in(value: bytes) -> Iterator[Any]:
    """The parsed envelopes of a record: a batch record's list, or the one envelope (None if unreadable)."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        yield None
        return
    if is_batch(value):
        yield from document["events"]
    else:
        yield document


class Progress:
    """Events seen, the times of the first and last, and the result file written once all have come."""

    def __init__(self, expected: int, result: Path) -> None:
        self.expected = expected
        self.result = result
        self.seen = 0
        self.first: float | None = None

    def begin(self) -> None:
        """The clock starts when the partitions are assigned and the consumer starts fetching: Faust fetches
        ahead of the agent and ``take_events`` waits up to half a second to fill a batch, so the first event
        processed comes after much of a batch-record topic was already read."""
        if self.first is None:
            self.first = time.perf_counter()

    def add(self, events: int, details: Callable[[], dict[str, Any]] = dict) -> None:
        """Count events just processed; at the expected count, write the result with ``details()`` added."""
        self.seen += events
        if self.seen >= self.expected and not self.result.exists():
            seconds = time.perf_counter() - (self.first or 0.0)
            partial = self.result.with_suffix(".partial")
            partial.write_bytes(orjson.dumps({"events": self.seen, "seconds": seconds, **details()}))
            partial.rename(self.result)  # the caller never reads a half-written file


def counting_agent(app: faust.App, topic: faust.TopicT, progress: Progress) -> None:
    @app.agent(topic, name="count")
    async def count(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(TAKE_EVENTS, within=TAKE_WITHIN_S):
            progress.add(sum(1 for event in batch for _ in events_in(event.value)))


def textbook_agent(app: faust.App, topic: faust.TopicT, settings: Settings, progress: Progress) -> None:
    table = app.Table("grid-counts", default=int, partitions=settings.topic_partitions, key_type=str,
                      value_type=int)  # fmt: skip
    # Faust takes one timestamp per Kafka record (or a field of a model value); a batch record's envelopes each
    # have their own event time, so the window is placed by the time of the envelope being applied.
    applying = [0.0]
    # Expiring a day later: Faust keeps its expiry bookkeeping, and nothing of the bench's 2 h goes before the check.
    windowed = table.hopping(settings.hop_window_seconds, settings.window_seconds, expires=timedelta(days=1))
    counts = windowed.relative_to(lambda event: applying[0])

    def windows() -> dict[str, Any]:
        return {"windows": [(grid, int(window[0]), n) for (grid, window), n in table.data.items()]}

    @app.agent(topic, name="textbook")
    async def textbook(stream: faust.StreamT) -> None:
        async for value in stream:
            read = 0
            for envelope in events_in(value):
                read += 1
                if isinstance(envelope, dict):  # an unreadable envelope is skipped, as any agent must
                    applying[0] = datetime.fromisoformat(envelope["event_time"]).timestamp()
                    counts[envelope["grid_id"]] += 1
            progress.add(read, windows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("agent", choices=("count", "textbook"))
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--expected", type=int, required=True, help="events (a batch record's envelopes) to read")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = Settings()
    (settings.data_dir / "faust" / args.app_id).mkdir(parents=True, exist_ok=True)  # Faust makes only the last
    app = faust_app(settings, args.app_id, stream_buffer=TAKE_EVENTS * 2)  # the worker's Faust options
    topic = app.topic(settings.topic_events, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw", partitions=settings.topic_partitions)  # fmt: skip
    progress = Progress(args.expected, args.result)

    @app.on_partitions_assigned.connect
    async def assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
        progress.begin()

    if args.agent == "count":
        counting_agent(app, topic, progress)
    else:
        textbook_agent(app, topic, settings, progress)
    with contextlib.suppress(SystemExit):  # Faust exits the process when stopped; the result is on disk
        PromptWorker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
    return 0


# --- the caller's side (bench.worker_throughput) ---------------------------------------------------------


def run_agent(settings: Settings, agent: str, expected: int, work_dir: Path) -> dict[str, Any]:
    """Start one agent as a process of its own (app id, consumer group, changelog and state dir of its own),
    wait for its result, stop it."""
    app_id = f"{settings.topic_prefix}{agent}"
    result = work_dir / f"{app_id}.json"
    child = ChildProcess(agent, settings, work_dir / f"{app_id}.log")
    with open(child.log_path, "ab") as log:  # ChildProcess runs `pingan` commands; stop and log_tail fit this too
        child.process = subprocess.Popen(
            [sys.executable, "-m", "bench.faust_agents", agent, "--app-id", app_id, "--expected", str(expected),
             "--result", str(result)], env={**os.environ, **settings.as_env()}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: result.exists() or not child.alive, timeout=1200, what=f"the {agent} agent", interval=0.2)
        if not result.exists():
            raise RuntimeError(f"the {agent} agent stopped:\n{child.log_tail()}")
    finally:
        child.stop()
    return orjson.loads(result.read_bytes())


def expected_windows(settings: Settings, messages: Sequence[tuple[bytes, bytes]]) -> Counter[tuple[str, int]]:
    """Events per (grid, window start) of the hopping windows, from the stream as written: what the textbook
    agent must count (every readable event, repeats included: it does not de-duplicate)."""
    size, step = settings.hop_window_seconds, settings.window_seconds
    counts: Counter[tuple[str, int]] = Counter()
    for _, value in messages:
        if is_unreadable(value):
            continue
        document = orjson.loads(value)
        last = int(datetime.fromisoformat(document["event_time"]).timestamp()) // step * step
        for start in range(last - size + step, last + 1, step):
            counts[(document["grid_id"], start)] += 1
    return counts


def check_windows(settings: Settings, messages: Sequence[tuple[bytes, bytes]], result: dict[str, Any]) -> str:
    """ "equal" when the agent's table holds exactly the expected counts, else what differs."""
    expected = expected_windows(settings, messages)
    found = Counter({(grid, start): n for grid, start, n in result["windows"]})
    if found == expected:
        return f"equal ({len(expected):,} grid windows)"
    differing = [key for key in expected.keys() | found.keys() if expected[key] != found[key]]
    example = min(differing)
    return (f"DIFFER in {len(differing):,} of {len(expected):,} grid windows (e.g. {example}: expected "
            f"{expected[example]}, the table has {found[example]})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
