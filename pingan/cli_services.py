"""``pingan services up|down|status``: the local broker and ClickHouse (see pingan/services/).

Wired into the main parser by ``add_services_parser(subparsers)``; each handler takes the settings and the
parsed arguments and returns an exit code, like the other commands.
"""

from __future__ import annotations

import argparse
from typing import Any

from pingan import services
from pingan.settings import Settings


def _up(settings: Settings, args: argparse.Namespace) -> int:
    handles = services.up(settings, timeout=args.timeout)
    for handle in handles:
        if not handle.managed:
            how = "external, answering"
        elif handle.started:
            how = f"started, pid {handle.pid}"
        else:
            how = f"already running, pid {handle.pid}"
        print(f"{handle.name:<11} {handle.address:<22} {how}")
    paths = services.service_paths(settings)
    if any(handle.started for handle in handles):
        print(f"logs in {paths.log_dir}; stop with: pingan services down")
    return 0


def _down(settings: Settings, args: argparse.Namespace) -> int:
    stopped = services.down(settings, timeout=args.timeout)
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    statuses = services.status(settings)
    for line in statuses:
        print(line.line())
    # Non-zero when something is down, so scripts can wait on `pingan services status`.
    return 0 if all(item.answering for item in statuses) else 1


def add_services_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``services`` with its three subcommands to the main parser's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "services", help="start, stop or inspect the local broker and ClickHouse (loopback addresses only)"
    )
    actions = parser.add_subparsers(dest="services_command", required=True)
    up = actions.add_parser("up", help="start what is managed and not running; wait until everything answers")
    up.add_argument("--timeout", type=float, default=services.START_TIMEOUT_S, help="seconds to wait for answers")
    up.set_defaults(handler=_up)
    down = actions.add_parser("down", help="stop the processes `services up` started (pid files), nothing else")
    down.add_argument("--timeout", type=float, default=services.STOP_TIMEOUT_S, help="seconds before SIGKILL")
    down.set_defaults(handler=_down)
    status = actions.add_parser("status", help="each service: managed or external, pid, address, answering")
    status.set_defaults(handler=_status)
    return parser
