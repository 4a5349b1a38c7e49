"""Evaluate the risk index against ground truth: the simulated city with injected incidents, offline.

    .venv/bin/pip install -e '.[eval]'       # matplotlib, for the plot
    .venv/bin/python -m bench.evaluate_index [--hours 12] [--write]

Twelve hours of the demo district (all four feeds, diurnal cycle) are generated with known incidents and
replayed through the worker's own pure pipeline (pingan.streams.pipeline.process_batch, the same code the Faust
agent runs), with the shipped config. No broker or database is needed, and the result is deterministic.

Incidents: one per chosen grid, 15 minutes of extra 110 calls (serious categories, severity 4, as the
simulator's bursts). An incident "at m x the base rate" adds (m - 1) x the grid's own expected call rate
over those 15 minutes, but at least m calls: grids expect 0.05-0.8 calls an hour, so a literal 3x would be
a fraction of one call; the floor makes the sizes 3, 5 and 10 calls. Grids are drawn across the whole range
of base rates, from quiet residential grids to the railway station.

Baseline: the worker's own learning code (pingan.index.baseline.learn) over ``--history-weeks`` weeks of
incident-free simulated history before the evaluated hours (0: the type/population prior alone).

Metrics:
- recall: incidents whose grid shows orange or red within 15 minutes (event time) of the first incident call;
- time to orange / red: from the first incident call to the first update at that level (median);
- false-alarm rate: grid-hours in which a grid showed orange or red with no incident of its own in the
  75 minutes before (the incident, the one-hour window and the hysteresis), over all such grid-hours.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from bench.docs_sections import record_run, replace_section
from pingan.grids import GridRegistry
from pingan.index.baseline import BaselineModel, GridProfile, LearnedBaseline, hour_of_week, learn
from pingan.index.scoring import IndexConfig, load_config
from pingan.producers.simulator import CitySimulator
from pingan.settings import REPO_ROOT, Settings
from pingan.streams.pipeline import PipelineConfig, Record, process_batch
from pingan.streams.windows import PartitionState, WindowSpec

START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # 08:00 in the district (Asia/Shanghai)
INCIDENT_S = 15 * 60
MULTIPLIERS = (3, 5, 10)
INCIDENTS_PER_MULTIPLIER = 40
ALERTING = {"orange", "red"}


@dataclass
class Incident:
    grid_id: str
    multiplier: int
    start: datetime
    calls: int
    base_per_hour: float
    first_alert: datetime | None = None
    first_red: datetime | None = None


@dataclass
class Timeline:
    """Each grid's shown level as change points (as_of, level), from the pipeline's risk updates."""

    changes: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)

    def add(self, grid_id: str, as_of: datetime, level: str) -> None:
        self.changes.setdefault(grid_id, []).append((as_of, level))

    def alerting_hours(self, end: datetime) -> set[tuple[str, int]]:
        hours = set()
        for grid_id, changes in self.changes.items():
            for (since, level), (until, _) in zip(changes, [*changes[1:], (end, "")], strict=True):
                if level in ALERTING:
                    hour = int(since.timestamp()) // 3600
                    while hour * 3600 < until.timestamp():
                        hours.add((grid_id, hour))
                        hour += 1
        return hours


def choose_incidents(
    simulator: CitySimulator, registry: GridRegistry, hours: int, seed: int, severity: int = 4
) -> list[Incident]:
    rng = random.Random(seed)
    share = simulator.grid_share("call110")
    per_hour = {g: simulator.mean_rate("call110") * share.get(g, 0.0) * 3600 for g in share}
    ranked = sorted(per_hour, key=lambda g: (per_hour[g], g))  # quiet to busy
    count = INCIDENTS_PER_MULTIPLIER * len(MULTIPLIERS)
    # Evenly across the ranking, so quiet and busy grids are both represented; one incident per grid.
    chosen = [ranked[int(i * (len(ranked) - 1) / (count - 1))] for i in range(count)]
    rng.shuffle(chosen)
    incidents = []
    for i, grid_id in enumerate(chosen):
        multiplier = MULTIPLIERS[i % len(MULTIPLIERS)]
        # after two hours of warm-up, and ending at least 75 minutes before the end
        offset = rng.uniform(2 * 3600, (hours - 1.5) * 3600)
        expected = per_hour[grid_id] * INCIDENT_S / 3600
        calls = max(multiplier, round((multiplier - 1) * expected))
        incidents.append(Incident(grid_id, multiplier, START + timedelta(seconds=offset), calls, per_hour[grid_id]))
    for incident in incidents:
        simulator.inject_burst(incident.grid_id, incident.start, INCIDENT_S, incident.calls, "call110", None, severity)
    return incidents


def _history_day(job: tuple[int, int]) -> Counter[tuple[str, str, str, int, int]]:
    """Events of one simulated day before the evaluation, counted per (grid, source, type, severity, hour)."""
    seed, day = job
    settings = Settings()
    simulator = CitySimulator(GridRegistry.load(settings.grid_registry_path), seed=seed,
                              pseudonym_key=b"evaluation", nonce="history")  # fmt: skip
    counts: Counter[tuple[str, str, str, int, int]] = Counter()
    begin = START - timedelta(days=day + 1)
    for hour in range(24):
        at = begin + timedelta(hours=hour)
        how = hour_of_week(at.timestamp())
        for event in simulator.events_between(at, at + timedelta(hours=1)):
            counts[(event["grid_id"], event["source"], event["type"], event["severity"], how)] += 1
    return counts


def learn_history(seed: int, weeks: int, index: IndexConfig, registry: GridRegistry) -> LearnedBaseline:
    """The baseline a deployment would learn from ``weeks`` of incident-free history (one day per process)."""
    total: Counter[tuple[str, str, str, int, int]] = Counter()
    with multiprocessing.get_context("spawn").Pool() as pool:
        for counts in pool.imap_unordered(_history_day, [(seed, day) for day in range(7 * weeks)]):
            total.update(counts)
    rows = ((*key, n) for key, n in total.items())
    grid_ids = [grid.grid_id for grid in registry.grids]
    return learn(rows, index.event_weight, weeks=weeks, version=f"simulated-{weeks}w", grids=grid_ids)


def replay(
    simulator: CitySimulator, index: IndexConfig, registry: GridRegistry, hours: int, baseline: BaselineModel | None
) -> Timeline:
    settings = Settings()
    spec = WindowSpec(settings.window_seconds, settings.hop_window_seconds, settings.allowed_lateness_seconds,
                      index.quiet_windows)  # fmt: skip
    state = PartitionState(spec)
    config = PipelineConfig(index=index, partitions=1, baseline=baseline)
    timeline = Timeline()
    offset = 0
    # One simulated minute per batch: the worker scores every batch (sub-second), so coarser steps would
    # date each change to the end of its step and understate how fast the index reacts.
    for step in range(hours * 60):
        begin = START + timedelta(minutes=step)
        documents = simulator.events_between(begin, begin + timedelta(minutes=1))
        documents.sort(key=lambda d: d["event_time"])
        records = []
        for document in documents:
            records.append(Record("sim", 0, offset, None, orjson.dumps(document), None))
            offset += 1
        now = begin + timedelta(minutes=1, seconds=1)
        result = process_batch(records, state, registry, config, now=now)
        for update in result.risk_updates:
            timeline.add(update.grid_id, update.as_of, update.level)
    return timeline


def score(incidents: list[Incident], timeline: Timeline, hours: int, grids: int) -> dict:
    for incident in incidents:
        for as_of, level in timeline.changes.get(incident.grid_id, []):
            if as_of < incident.start:
                continue
            if level in ALERTING and incident.first_alert is None:
                incident.first_alert = as_of
            if level == "red" and incident.first_red is None:
                incident.first_red = as_of
    end = START + timedelta(hours=hours)
    excused = set()
    for incident in incidents:
        first = int(incident.start.timestamp()) // 3600
        last = int((incident.start + timedelta(seconds=INCIDENT_S + 75 * 60)).timestamp()) // 3600
        excused |= {(incident.grid_id, h) for h in range(first, last + 1)}
    alerting = timeline.alerting_hours(end)
    first_hour = int(START.timestamp()) // 3600 + 2  # the first two hours warm the windows up
    counted = {(g, h) for g, h in alerting if h >= first_hour}
    total = grids * (hours - 2) - len({(g, h) for g, h in excused if h >= first_hour})
    false_alarms = len(counted - excused)
    rows = []
    for multiplier in MULTIPLIERS:
        group = [i for i in incidents if i.multiplier == multiplier]
        if not group:
            continue
        limit = timedelta(seconds=INCIDENT_S)
        detected = [i for i in group if i.first_alert is not None and i.first_alert - i.start <= limit]
        to_alert = [(i.first_alert - i.start).total_seconds() / 60 for i in group if i.first_alert]
        to_red = [(i.first_red - i.start).total_seconds() / 60 for i in group if i.first_red]
        rows.append({
            "multiplier": multiplier, "incidents": len(group), "recall_15min": len(detected) / len(group),
            "median_min_to_orange": statistics.median(to_alert) if to_alert else None,
            "reached_red": len(to_red), "median_min_to_red": statistics.median(to_red) if to_red else None,
            "median_calls": statistics.median(i.calls for i in group),
        })  # fmt: skip
    return {"rows": rows, "false_alarm_rate": false_alarms / total, "false_alarm_hours": false_alarms,
            "grid_hours": total}  # fmt: skip


def plot(incidents: list[Incident], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for multiplier, marker in zip(MULTIPLIERS, ("o", "s", "^"), strict=True):
        group = [i for i in incidents if i.multiplier == multiplier]
        xs = [i.base_per_hour for i in group]
        ys = [(i.first_alert - i.start).total_seconds() / 60 if i.first_alert else 75 for i in group]
        ax.scatter(xs, ys, marker=marker, label=f"{multiplier}x base rate", alpha=0.75)
    ax.set_xscale("log")
    ax.axhline(15, color="grey", linestyle="--", linewidth=1)
    ax.text(0.01, 15.3, "15 min", color="grey", fontsize=8, transform=ax.get_yaxis_transform())
    ax.set_xlabel("grid's base rate of 110 calls per hour (log)")
    ax.set_ylabel("minutes to orange or red (75 = never)")
    ax.set_title("Time to detection per injected incident")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--history-weeks", type=int, default=1, help="weeks of history the baseline learns from")
    parser.add_argument(
        "--incident-severity", type=int, default=4, choices=range(1, 6), help="severity of the incident calls"
    )
    parser.add_argument("--write", action="store_true", help="write docs/evaluation.md and docs/evaluation.png")
    args = parser.parse_args()
    settings = Settings()
    registry = GridRegistry.load(settings.grid_registry_path)
    index = load_config(settings.risk_config_path)
    simulator = CitySimulator(registry, seed=args.seed, pseudonym_key=b"evaluation", nonce="eval")
    incidents = choose_incidents(simulator, registry, args.hours, args.seed, args.incident_severity)
    learned = learn_history(args.seed, args.history_weeks, index, registry) if args.history_weeks else None
    profiles = [GridProfile(g.grid_id, g.grid_type, g.population) for g in registry.grids]
    baseline = BaselineModel(index.baseline, profiles, learned)
    timeline = replay(simulator, index, registry, args.hours, baseline)
    result = score(incidents, timeline, args.hours, len(registry.grids))
    lines = [
        f"Config {index.version}; {args.hours} simulated hours from {START:%Y-%m-%d %H:%M} UTC; "
        f"{len(incidents)} incidents (calls at severity {args.incident_severity}) in {len(registry.grids)} grids; "
        f"seed {args.seed}; baseline "
        + (f"learned from {args.history_weeks} week(s) of simulated history." if learned else "priors only."),
        "",
        "| incident size | incidents | median calls added | recall within 15 min | median min to orange/red "
        "| reached red | median min to red |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        to_alert = "-" if row["median_min_to_orange"] is None else f"{row['median_min_to_orange']:.1f}"
        to_red = "-" if row["median_min_to_red"] is None else f"{row['median_min_to_red']:.1f}"
        lines.append(
            f"| {row['multiplier']}x base | {row['incidents']} | {row['median_calls']:.0f} | "
            f"{row['recall_15min']:.2f} | {to_alert} | {row['reached_red']} | {to_red} |"
        )
    lines += [
        "",
        f"False alarms: {result['false_alarm_hours']} of {result['grid_hours']} grid-hours without an incident "
        f"were orange or red: **{result['false_alarm_rate']:.2%}**.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        docs = REPO_ROOT / "docs"
        plot(incidents, docs / "evaluation.png")
        replace_section(docs / "evaluation.md", "results", f"{report}\n\n![](evaluation.png)")
        record_run({
            "dataset": "simulated district", "config_version": index.version, "hours": args.hours, "seed": args.seed,
            "history_weeks": args.history_weeks, "incident_severity": args.incident_severity,
            "false_alarm_rate": result["false_alarm_rate"],
            "recall_15min": {str(row["multiplier"]): row["recall_15min"] for row in result["rows"]},
        })  # fmt: skip


if __name__ == "__main__":
    main()
