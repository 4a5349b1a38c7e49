"""Rebalance stalls of a two-worker group: a join, a SIGKILL and a rejoin on a steady stream.

    .venv/bin/python -m bench.rebalance_stall [--runs 3] [--rate 200] [--write docs/benchmarks.md]

Starts its own broker and ClickHouse on free loopback ports in a temporary directory and runs the scenario
of tests/integration/test_multi_worker.py (tests/support/multi_worker.py) ``--runs`` times: worker A alone,
B joins, B is SIGKILLed, B rejoins, B stops with SIGTERM (a graceful leave), while a paced producer keeps
every partition busy and a sampler reads each partition's stored row count every 0.1 s. Per change it
reports the longest time no partition stored anything, the longest time one partition stored nothing, and
the time until the last stalled partition stored again (for the SIGKILL: SIGKILL -> ready). Each run also
checks the group's results against the single worker's, and counts worker log lines worth a look
(IllegalStateError, never-delivered offsets).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pingan import services
from pingan.settings import Settings
from tests.support.multi_worker import ScenarioFailed, ScenarioResult, differences, run_scenario
from tests.support.processes import free_port

CHANGES = ("join", "SIGKILL", "rejoin", "leave (SIGTERM)")
WATCHED = {"IllegalStateError": "IllegalStateError", "never delivered": "were never delivered"}


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def report(runs: list[ScenarioResult], rate: float) -> list[str]:
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: rebalance stalls, {len(runs)} runs (`bench/rebalance_stall.py`)",
        "",
        f"Machine: {cpu} cores shared with other work, Python {platform.python_version()}; Tansu broker, "
        f"ClickHouse 18.16, three workers (a group of two, one alone) and a producer at {rate:.0f} events/s "
        "on the same host. Seconds, median (min-max):",
        "",
        "| change | no partition stores | one partition stores nothing | until the last stalled partition stores |",
        "|---|---|---|---|",
    ]
    for change in CHANGES:
        found = [s for run in runs for s in run.stalls if s.change == change]
        lines.append(
            f"| {change} | {_spread([s.all_partitions_s for s in found])} | "
            f"{_spread([s.one_partition_s for s in found])} | {_spread([s.until_all_flowing_s for s in found])} |"
        )
    identical = sum(1 for run in runs if run.group and not differences(run.group, run.single))
    counts = {name: sum(len(run.log_lines(needle)) for run in runs) for name, needle in WATCHED.items()}
    watched = ", ".join(f"{name}: {count}" for name, count in counts.items())
    lines += [
        "",
        f"Group results identical to the single worker's in {identical} of {len(runs)} runs (see the run lines "
        "above for the others: lost events, or the rows that differ). "
        f"Worker log lines over all runs: {watched}.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second while the workers change")
    parser.add_argument("--write", type=Path, default=None, help="append the results to this markdown file")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory(prefix="pingan-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "services",
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            clickhouse_port=free_port(),
            clickhouse_http_port=free_port(),
        )
        services.up(settings)
        try:
            for index in range(args.runs):
                run_dir = Path(tmp) / f"run{index}"
                run_dir.mkdir()
                run_settings = settings.model_copy(
                    update={"topic_prefix": f"r{index}.", "clickhouse_database": f"bench_rebalance_{index}"}
                )
                try:
                    result = run_scenario(run_settings, run_dir, rate=args.rate, events_count=25_000, leave=True)
                except ScenarioFailed as failed:  # the stalls were measured; the loss is reported below
                    print(f"run {index}: {failed}", flush=True)
                    result = failed.result
                runs.append(result)
                print(f"run {index}: " + "; ".join(str(s) for s in result.stalls), flush=True)
                if result.group and differences(result.group, result.single):
                    # what differed, and what the group's workers said about lost logs and holes
                    print(f"run {index} differs: {differences(result.group, result.single)}", flush=True)
                    for line in result.log_lines("ERROR")[:20]:
                        print(f"run {index}: {line[:300]}", flush=True)
        finally:
            services.down(settings)
        lines = report(runs, args.rate)  # reads the runs' worker logs, inside the temporary directory

    print("\n".join(lines))
    if args.write:
        with args.write.open("a") as handle:
            handle.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
