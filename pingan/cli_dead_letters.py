"""``pingan dead-letters list|show|replay|sink``: see, fix and replay the records no way in could accept.

list    the dead-letter table, newest first, filtered by way in (--source), feed, kind and received time
show    one dead letter in full, by its origin (as list prints it)
replay  re-validate pending dead letters with today's feed config and grid registry; send what passes, mark
        it replayed (a second replay skips it), leave what still fails as it is
sink    store the dead-letter topic in the table (the one writer of the table; run it next to the worker)

Wired into the main parser by ``add_dead_letters_parser(subparsers)``; each handler takes the settings and the
parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pingan.dead_letter import SOURCES, parse_origin
from pingan.errors import ConfigError, InvalidEvent
from pingan.settings import Settings

__all__ = ["Replay", "add_dead_letters_parser", "replay_decision"]

REASON_WIDTH = 70


def _time(text: str) -> datetime:
    """A --since/--until value: ISO 8601; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-23T08:00:00+08:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"source": args.source, "feed": args.feed, "kind": args.kind, "since": args.since, "until": args.until}


def _stored_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in row.items() if k != "raw"},
        "received_at": row["received_at"].isoformat(),
        "ingested_at": row["ingested_at"].isoformat(),
        "replayed_at": row["replayed_at"].isoformat() if row["replayed_at"] else None,
        "raw": row["raw"],
    }


def _list(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.store import dead_letters
    from pingan.store.client import connect

    executor = connect(settings)
    try:
        rows = dead_letters.recent(executor, limit=args.limit, replayed=args.replayed, **_filters(args))
    finally:
        executor.close()
    if args.json:
        for row in rows:
            print(orjson.dumps(_stored_json(row)).decode())
        return 0
    table = [("RECEIVED", "SOURCE", "FEED", "KIND", "FIELD", "ORIGIN", "REPLAYED", "REASON")]
    for row in rows:
        reason = row["reason"] if len(row["reason"]) <= REASON_WIDTH else row["reason"][: REASON_WIDTH - 1] + "…"
        replayed = row["replayed_as"] or "-" if row["replayed_at"] else "-"
        table.append((
            row["received_at"].strftime("%Y-%m-%d %H:%M:%S"), row["source"], row["feed"] or "?", row["kind"],
            row["field"] or "-", row["origin"], replayed, reason,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
    print(f"\n{len(rows)} dead letters" + (f" (at most {args.limit}: --limit)" if len(rows) == args.limit else ""))
    return 0


def _show(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.store import dead_letters
    from pingan.store.client import connect

    executor = connect(settings)
    try:
        row = dead_letters.find(executor, *parse_origin(args.origin))
    finally:
        executor.close()
    if row is None:
        raise ConfigError(f"no dead letter with origin {args.origin!r} (pingan dead-letters list shows them)")
    shown = _stored_json(row)
    if args.json:
        print(orjson.dumps(shown).decode())
        return 0
    for key in ("origin", "source", "feed", "adapter", "kind", "field", "reason", "received_at", "ingested_at",
                "raw_size", "raw_sha256", "redacted", "replayed_at", "replayed_as"):  # fmt: skip
        print(f"{key:12} {shown[key] if shown[key] not in (None, '') else '-'}")
    if row["raw_size"] > len(row["raw"].encode()):
        print(f"{'':12} raw is truncated: {len(row['raw'].encode())} of {row['raw_size']} bytes kept")
    print("raw:")
    print(row["raw"])
    return 0


# --- replay -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """What replay does with one stored dead letter: send ``envelope`` on ``topic``, or keep it (``error``)."""

    origin: str
    envelope: dict[str, Any] | None = None
    topic: str = ""
    error: InvalidEvent | None = None


def replay_decision(
    row: Any, *, adapters: Any, rules: Any, grids: Any, topics: dict[str, str], now: datetime
) -> Replay:
    """Re-validate one row (a :class:`pingan.store.dead_letters.StoredDeadLetter`) with today's config. Pure.

    A raw device record (it came through an adapter: tailer, webhook) is mapped again by its feed's adapter;
    an envelope (gateway, worker) is checked by the feed rules and the grid registry. A row whose bytes were
    truncated cannot be replayed.
    """
    from pingan.grids import resolve_grid

    origin = row["origin"]
    raw = row["raw"].encode()
    if row["raw_size"] > len(raw):
        reason = f"only the first {len(raw)} of {row['raw_size']} bytes were kept; it cannot be replayed"
        return Replay(origin, error=InvalidEvent("truncated", reason))
    if row["raw_sha256"] and hashlib.sha256(raw).hexdigest() != row["raw_sha256"]:
        # The table keeps text: bytes that were not UTF-8 were replaced, so this is not the record any more.
        reason = "the stored copy differs from the record (it was not UTF-8 text); it cannot be replayed"
        return Replay(origin, error=InvalidEvent("not_replayable", reason))
    feed = row["feed"]
    if row["adapter"]:
        adapter = adapters(feed)
        if adapter is None:
            return Replay(origin, error=InvalidEvent("unknown_source", f"feed {feed!r} is not registered any more"))
        # Adapters keep one JSON record per dead letter (a CSV row as a JSON object, a batch item with the
        # batch's defaults), so it is mapped again as one line.
        result = adapter.map_line(raw, origin, now=now)
        if result.envelope is None:
            assert result.letter is not None
            return Replay(origin, error=result.letter.error)
        return Replay(origin, result.envelope, topics.get(feed, topics[""]))
    try:
        document = orjson.loads(raw)
        if isinstance(document, dict) and document.get("source") is None and feed:
            document = {**document, "source": feed}  # the gateway takes a missing source from its path
        event = rules.validate(orjson.dumps(document), now=now)
        resolve_grid(event, grids)
    except orjson.JSONDecodeError as exc:
        return Replay(origin, error=InvalidEvent("bad_json", f"not JSON: {exc}"))
    except InvalidEvent as exc:
        return Replay(origin, error=exc)
    return Replay(origin, document, topics[""])


async def _send(settings: Settings, decisions: list[Replay], registry: Any) -> None:
    from pingan.producers.adapters.base import Mapped
    from pingan.producers.adapters.delivery import FeedPublisher, RetryPolicy

    by_topic: dict[str, list[Mapped]] = defaultdict(list)
    for decision in decisions:
        assert decision.envelope is not None
        by_topic[decision.topic].append(Mapped(decision.origin, envelope=decision.envelope))
    for topic, mapped in by_topic.items():
        publisher = FeedPublisher(
            settings, registry, topic=topic, retry=RetryPolicy(max_attempts=5), client_id="pingan-replay"
        )
        async with publisher:
            await publisher.publish(mapped)


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.feeds import FeedRules, load_feeds
    from pingan.grids import GridRegistry
    from pingan.producers.adapters import adapter_for
    from pingan.store import dead_letters
    from pingan.store.client import connect
    from pingan.topics import ensure_topics

    feeds = load_feeds(settings)
    registry = GridRegistry.load(settings.grid_registry_path)
    built: dict[str, Any] = {}

    def adapters(feed: str) -> Any:
        if feed not in built:
            spec = feeds.get(feed)
            built[feed] = None if spec is None or spec.mapper is None else adapter_for(settings, spec, registry)
        return built[feed]

    topics = {"": settings.topic_events, **{name: spec.topic_name(settings) for name, spec in feeds.items()}}
    rules = FeedRules.for_settings(settings, feeds)
    now = datetime.now(UTC)
    executor = connect(settings)
    try:
        rows = dead_letters.recent(executor, limit=args.limit, replayed=False, **_filters(args))
        decisions = [
            (row, replay_decision(row, adapters=adapters, rules=rules, grids=registry, topics=topics, now=now))
            for row in rows
        ]
        passing = [(row, d) for row, d in decisions if d.envelope is not None]
        if passing and not args.dry_run:

            async def deliver() -> None:
                await ensure_topics(settings)
                await _send(settings, [d for _, d in passing], registry)

            asyncio.run(deliver())
            # Only after the broker has them: a crash before this line replays them again next time, with the
            # same event ids, which the worker's dedupe absorbs.
            for row, decision in passing:
                assert decision.envelope is not None
                dead_letters.mark_replayed(executor, row, at=now, event_id=str(decision.envelope.get("event_id", "")))
    finally:
        executor.close()
    still: Counter[str] = Counter()
    for _, decision in decisions:
        if decision.envelope is not None:
            verb = "would replay" if args.dry_run else "replayed"
            print(f"{verb} {decision.origin} as {decision.envelope.get('event_id')}")
        else:
            assert decision.error is not None
            still[decision.error.kind] += 1
            where = f" at {decision.error.field}" if decision.error.field else ""
            print(f"still refused {decision.origin}: {decision.error.kind}{where}: {decision.error.reason}")
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(still.items()))
    print(
        f"\n{len(decisions)} pending dead letters: {len(passing)} {'would be ' if args.dry_run else ''}replayed, "
        f"{sum(still.values())} still refused" + (f" ({kinds})" if kinds else "")
    )
    return 0


def _sink(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.dead_letter_sink import DeadLetterSink

    async def run() -> None:
        sink = DeadLetterSink(settings)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, sink.stop)
        await sink.run()

    asyncio.run(run())
    return 0


def add_dead_letters_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dead-letters`` with its subcommands to the main parser's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dead-letters", help="records no way in could accept: list, show, replay after a fix; the table's sink"
    )
    actions = parser.add_subparsers(dest="dead_letters_command", required=True)

    def filtered(name: str, help_: str, limit: int) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_)
        sub.add_argument("--source", choices=SOURCES, help="the way in: " + ", ".join(SOURCES))
        sub.add_argument("--feed", help="e.g. call110 or a feed of yours")
        sub.add_argument("--kind", help="e.g. unknown_category, unknown_place, bad_json")
        sub.add_argument("--since", type=_time, help="received at or after (ISO 8601; UTC without an offset)")
        sub.add_argument("--until", type=_time, help="received before")
        sub.add_argument("--limit", type=int, default=limit, help=f"at most this many (default {limit})")
        return sub

    listing = filtered("list", "the dead-letter table, newest first", 50)
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--pending", dest="replayed", action="store_const", const=False, help="not replayed yet")
    state.add_argument("--replayed", dest="replayed", action="store_const", const=True, help="replayed ones only")
    listing.add_argument("--json", action="store_true", help="one JSON object per line, raw record included")
    listing.set_defaults(handler=_list, replayed=None)

    show = actions.add_parser("show", help="one dead letter in full, by its origin")
    show.add_argument("origin", help="as list prints it: topic/partition/offset, file:PATH@OFFSET or http:WHERE#INDEX")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    replay = filtered("replay", "re-validate pending dead letters with today's config; send what passes", 1000)
    replay.add_argument("--dry-run", action="store_true", help="say what would happen; send and mark nothing")
    replay.set_defaults(handler=_replay)

    sink = actions.add_parser("sink", help="store the dead-letter topic in the dead_letters table (runs until stopped)")
    sink.set_defaults(handler=_sink)
    return parser
