"""``pingan producers list|new|tail|check``: the registered feeds, a new feed's skeleton, the file tailer and
its dry run (exit 1 when some record would be refused).

Wired into the main parser by ``add_producers_parser(subparsers)``; each handler takes the settings and the
parsed arguments and returns an exit code, like the other commands.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from pingan.errors import ConfigError
from pingan.feeds import FeedSpec, load_feeds, read_risk_document
from pingan.settings import REPO_ROOT, Settings


def _index_origin(spec: FeedSpec, risk_sources: set[str]) -> str:
    if spec.name in risk_sources:
        return "risk-index.toml"
    return "feeds config" if spec.index is not None else "none (weighs 0)"


def _list(settings: Settings, args: argparse.Namespace) -> int:
    feeds = load_feeds(settings)
    risk_sources = set(read_risk_document(settings.risk_config_path).get("sources", {}))
    rows = [("NAME", "ORIGIN", "PAYLOAD MODEL", "TYPES", "TOPIC", "INDEX", "DESCRIPTION")]
    for spec in feeds.values():
        model = f"{spec.payload_model.__module__}.{spec.payload_model.__qualname__}"
        index = _index_origin(spec, risk_sources)
        rows.append(
            (spec.name, spec.origin, model, str(len(spec.mapping)), spec.topic_name(settings), index, spec.description)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    if args.verbose:
        print()
        for spec in feeds.values():
            print(f"{spec.name}: registered by {spec.registered_by}")
    return 0


def _new(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.producers.adapters.scaffold import scaffold

    plugin_dir: Path | None = args.plugin
    result = scaffold(args.name, plugin=plugin_dir is not None)
    target = plugin_dir if plugin_dir is not None else args.root
    paths = [target / relative for relative in result.files]
    existing = [path for path in paths if path.exists()]
    if existing and not args.force:
        raise ConfigError(f"not overwriting {', '.join(map(str, existing))} (use --force)")
    for path, text in zip(paths, result.files.values(), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    print(f"\n# add to {settings.feeds_config_path}:\n")
    print(result.feeds_toml)
    pip = Path(sys.executable).parent / "pip"  # the environment pingan runs in, e.g. .venv/bin/pip
    print(result.next_steps.format(pip=pip, folder=target.resolve()))
    return 0


async def _run_tail(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.grids import GridRegistry
    from pingan.producers.adapters import adapter_for, publisher_for
    from pingan.producers.adapters.tailer import FileTailer, default_state_path, format_for
    from pingan.topics import ensure_topics

    feeds = load_feeds(settings)
    spec = feeds.get(args.feed)
    if spec is None:
        raise ConfigError(f"no feed called {args.feed!r}; registered: {', '.join(feeds)}")
    registry = GridRegistry.load(settings.grid_registry_path)
    adapter = adapter_for(settings, spec, registry)  # refuses what the worker would (unknown grid...)
    path: Path = args.path
    state_path = args.state or default_state_path(settings.data_dir, spec.name, path)
    await ensure_topics(settings)
    async with publisher_for(settings, spec, registry) as publisher:
        tailer = FileTailer(
            path,
            adapter,
            publisher,
            state_path=state_path,
            fmt=args.format or format_for(path),
            encoding=args.encoding,
            max_lines=args.max_lines,
            poll_interval=args.poll,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Stop between batches: the batch being delivered finishes and its position is saved.
            loop.add_signal_handler(signum, tailer.stop)
        print(f"tailing {path} as {spec.name} into {publisher.topic} (position in {state_path})", flush=True)
        report = await tailer.run(stop_at_eof=args.once, log_every=args.log_every)
    print(report.summary())
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    """Dry run of a file: what each record becomes, or why it is refused. Nothing is sent."""
    from collections import Counter
    from datetime import UTC, datetime

    import orjson

    from pingan.grids import GridRegistry
    from pingan.producers.adapters import adapter_for
    from pingan.producers.adapters.tailer import format_for, map_lines, read_lines

    feeds = load_feeds(settings)
    spec = feeds.get(args.feed)
    if spec is None:
        raise ConfigError(f"no feed called {args.feed!r}; registered: {', '.join(feeds)}")
    path: Path = args.path
    if not path.is_file():
        raise ConfigError(f"{path} is not a file")
    adapter = adapter_for(settings, spec, GridRegistry.load(settings.grid_registry_path))
    fmt = args.format or format_for(path)
    lines, header = read_lines(path, fmt, args.encoding)
    data = path.read_bytes()
    mapped = map_lines(
        adapter, lines, path=path, fmt=fmt, header=header, encoding=args.encoding, max_bytes=1024 * 1024,
        now=datetime.now(UTC),
    )  # fmt: skip
    refused: Counter[str] = Counter()
    for line, item in zip(lines, mapped, strict=True):
        number = data.count(b"\n", 0, line.offset) + 1
        if item.envelope is not None:
            envelope = item.envelope
            where = envelope.get("grid_id") or envelope.get("location")
            shown = {"line": number, "origin": item.origin, "status": "accepted", "envelope": envelope}
            text = (
                f"line {number}: accepted {envelope['event_id']} type {envelope['type']} "
                f"severity {envelope['severity']} at {where}"
            )
        else:
            assert item.letter is not None
            letter = item.letter
            refused[letter.kind] += 1
            error = {"kind": letter.kind, "field": letter.field or None, "reason": letter.reason}
            shown = {"line": number, "origin": item.origin, "status": "refused", "error": error}
            at = f" at {letter.field}" if letter.field else ""
            text = f"line {number}: refused {letter.kind}{at}: {letter.reason}"
        print(orjson.dumps(shown).decode() if args.json else text)
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(refused.items()))
    summary = (
        f"{len(mapped)} records: {len(mapped) - sum(refused.values())} would be accepted, "
        f"{sum(refused.values())} refused" + (f" ({kinds})" if kinds else "") + "; nothing was sent"
    )
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return 1 if refused else 0


def _tail(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run_tail(settings, args))


def add_producers_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``producers`` with its subcommands to the main parser's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "producers", help="feeds: list what is registered, scaffold a new one, tail an export file"
    )
    actions = parser.add_subparsers(dest="producers_command", required=True)

    listing = actions.add_parser("list", help="registered feeds: origin, payload model, category table, index")
    listing.add_argument("-v", "--verbose", action="store_true", help="also say what registered each feed")
    listing.set_defaults(handler=_list)

    new = actions.add_parser("new", help="create a new feed's module and test, print its feeds config section")
    new.add_argument("name", help="the source name, [a-z0-9_]")
    new.add_argument("--plugin", type=Path, metavar="DIR", help="make a separate plugin package under DIR instead")
    new.add_argument("--root", type=Path, default=REPO_ROOT, help="repository to write into (default: this one)")
    new.add_argument("--force", action="store_true", help="overwrite existing files")
    new.set_defaults(handler=_new)

    tail = actions.add_parser("tail", help="tail a growing JSON-lines or CSV export into a feed (e.g. call110)")
    tail.add_argument("feed", help="a registered feed with a mapper, e.g. call110")
    tail.add_argument("path", type=Path)
    tail.add_argument("--format", choices=["jsonl", "csv"], help="default: csv for *.csv, else jsonl")
    tail.add_argument("--encoding", default="utf-8", help="e.g. gb18030 for exports from Chinese Excel")
    tail.add_argument("--state", type=Path, help="position file (default: under the data directory)")
    tail.add_argument("--max-lines", type=int, default=500, help="lines per acknowledged batch")
    tail.add_argument("--poll", type=float, default=0.5, help="seconds between checks for new lines")
    tail.add_argument("--once", action="store_true", help="stop at the end of the file instead of following it")
    tail.add_argument("--log-every", type=float, default=60.0, metavar="SECONDS",
                      help="log the counts (accepted, dead-lettered by kind, last line read) this often")  # fmt: skip
    tail.set_defaults(handler=_tail)

    check = actions.add_parser(
        "check", help="dry run: what each record of a file becomes, or why it is refused; nothing is sent"
    )
    check.add_argument("feed", help="a registered feed with a mapper")
    check.add_argument("path", type=Path, help="a JSON-lines or CSV file (a sample export)")
    check.add_argument("--format", choices=["jsonl", "csv"], help="default: csv for *.csv, else jsonl")
    check.add_argument("--encoding", default="utf-8", help="e.g. gb18030")
    check.add_argument("--json", action="store_true", help="one JSON object per record (the summary on stderr)")
    check.set_defaults(handler=_check)
    return parser
