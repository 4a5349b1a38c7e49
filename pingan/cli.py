"""The `pingan` command. Settings are built once here and passed to whatever runs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from pingan.errors import PinganError
from pingan.settings import Settings


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.streams.worker import run_worker

    run_worker(settings, loglevel=args.log_level)
    return 0


def _api(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.api.app import serve

    serve(settings)
    return 0


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.producers.simulator import simulate_forever

    asyncio.run(simulate_forever(settings, duration_s=args.duration, bursts=not args.no_bursts))
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.store.migrate import prepare_database

    prepare_database(settings)
    print(f"ClickHouse database {settings.clickhouse_database} is up to date")
    return 0


def _schemas(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.schemas.export import export

    for path in export():
        print(path)
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from pingan.demo import run_demo

    return run_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pingan", description="Pingan situational-awareness backend")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, handler: Callable[[Settings, argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_)
        sub.set_defaults(handler=handler)
        return sub

    command("worker", _worker, "run the stream worker (validation, windows, risk index, sink)")
    command("api", _api, "run the query API (uvicorn)")
    simulate = command("simulate", _simulate, "produce the simulated demo city's events")
    simulate.add_argument("--duration", type=float, default=None, help="seconds to run (default: until stopped)")
    simulate.add_argument("--no-bursts", action="store_true", help="no injected incidents")
    command("migrate", _migrate, "create the ClickHouse database and apply migrations")
    command("schemas", _schemas, "export JSON Schema files to schemas/jsonschema/")
    command("demo", _demo, "start everything on loopback with a simulated city and print the API URL")

    from pingan.cli_baselines import add_baselines_parser
    from pingan.cli_index import add_index_parser
    from pingan.cli_services import add_services_parser

    add_services_parser(commands)
    add_index_parser(commands)
    add_baselines_parser(commands)
    from pingan.cli_producers import add_producers_parser

    add_producers_parser(commands)
    from pingan.cli_dead_letters import add_dead_letters_parser

    add_dead_letters_parser(commands)
    from pingan.cli_grids import add_grids_parser

    add_grids_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        return args.handler(settings, args)
    except PinganError as exc:
        print(f"pingan: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
