"""Evaluate the risk index on real police data: flag rate, recall by base-rate quintile, simple baselines.

    make evaluate-real          # both cities, writes docs/evaluation.md (real section) and its plots
    .venv/bin/python -m bench.evaluate_real --city toronto [--write]

Method (docs/evaluation.md says the same for readers):

1. **Grids**: ``pingan.gridgen`` lays square cells (500 m) over the data's box and keeps the cells holding a
   training event; the hierarchy comes from the data's own areas (Toronto neighbourhoods; Minneapolis
   precincts and neighbourhoods).
2. **Feeds**: ``deploy/config/real/feeds.toml`` maps each dataset category to (type, severity) and gives the
   index weights; the index config is built the worker's way (``pingan.index.loading.load_index``: shipped
   risk-index.toml plus the feeds' sections).
3. **Baseline**: the worker's own ``pingan.index.baseline.learn`` over the training period (Toronto 2014-2019,
   Minneapolis January-September), scored through ``pingan.index.baseline.BaselineModel``.
4. **Incidents**: per base-rate quintile of grids (quintiles of the grids' training event rate) and per
   multiplier 2x / 3x / 5x, ``--per-cell`` incidents at random times of the evaluation period. An incident
   adds (m - 1) x the grid's own hour-of-week expectation over 15 minutes, but at least 3 events, of the
   dataset's commonest serious category, at the grid's centre, at random times within the 15 minutes.
5. **Replay**: the evaluation period's real events plus the incidents go through the worker's own pure
   pipeline, ``pingan.streams.pipeline.process_batch``, in one-minute batches, with the shipped config: the
   colours are the worker's, not a re-implementation. Real feeds are sparse (Toronto: 3 events an hour
   city-wide), so a zero-weight heartbeat event at the end of each batch moves the watermark as a busy
   deployment's other feeds would. Minutes without an event are skipped except the first of each
   five-minute bucket: with no event, only a new bucket changes any grid's colour (the pipeline evaluates
   untouched grids only then), so skipping the others changes nothing (``tests/unit/test_real_data.py``
   checks it against every-minute batches).
6. **Flag rate**: grid-hours orange or red with nothing injected in the grid in the 90 minutes before,
   over all grid-hours of the period but the first two (warm-up); overall and per quintile.
7. **Recall** within 15 / 30 / 60 minutes of the first incident event; by quintile and multiplier.
8. **Simple baselines** (``bench/real_baselines.py``) at the same flag rate, and a **calibration** table:
   expected (the worker's baseline) vs observed weighted counts per grid-hour of the evaluation period.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from bench import real_baselines as rb
from bench.docs_sections import record_run, replace_section
from bench.evaluate_index import ALERTING, Timeline
from bench.real_feeds import HEARTBEAT, envelope
from bench.real_sources import LOADERS, Dataset
from pingan.feeds import FeedRules, category_key, load_feeds
from pingan.gridgen import LabelledPoint, generate_registry
from pingan.grids import GridRegistry
from pingan.index.baseline import BaselineModel, GridProfile, hour_of_week, learn
from pingan.index.loading import load_index
from pingan.index.scoring import IndexConfig
from pingan.settings import REPO_ROOT, Settings
from pingan.streams.pipeline import PipelineConfig, Record, process_batch
from pingan.streams.windows import PartitionState, WindowSpec

REAL_FEEDS = REPO_ROOT / "deploy" / "config" / "real" / "feeds.toml"
MULTIPLIERS = (2, 3, 5)
LIMITS_MIN = (15, 30, 60)
INCIDENT_S = 15 * 60
MIN_EVENTS = 3
QUINTILES = 5
EXCUSED_S = INCIDENT_S + 75 * 60  # the incident, its hour-long window and the hysteresis
WARM_UP_S = 2 * 3600
INDEX = "risk index (the worker's pipeline)"
RAW_COUNT = "raw count in the window"
TARGET_FLAG_RATE = 0.02
KDE_AT_TARGET = "kernel-density hot spots (static), at 2 % of grid-hours"
WEIGHTED_COUNT = "weighted count in the window (index volume alone)"


@dataclass
class Prepared:
    dataset: Dataset
    registry: GridRegistry
    index: IndexConfig
    baseline: BaselineModel
    grid_ids: list[str]
    grid_of: np.ndarray  # per event: grid index, -1 outside every grid
    types: np.ndarray  # per event: envelope type
    severities: np.ndarray
    weights: np.ndarray  # per event: the index's weight
    base_rate: np.ndarray  # per grid: training events per hour
    quintile: np.ndarray  # per grid: 0 (quietest) .. 4
    how_mean: np.ndarray  # per grid x hour of week: training events per hour (unshrunk)
    train: tuple[datetime, datetime]
    cell_metres: float
    registry_document: dict  # the pingan-grids/1 document of ``registry``, as `pingan grids generate` writes it


@dataclass
class Incident:
    grid: int
    quintile: int
    multiplier: int
    start: float  # epoch seconds of the first event
    times: list[float]
    expected_per_hour: float
    detected_after: dict[str, float | None] = field(default_factory=dict)  # method -> seconds


def prepare(
    dataset: Dataset,
    cell_metres: float,
    train: tuple[datetime, datetime] | None = None,
    risk_config: Path | None = None,
    prior_minimum: float | None = None,
) -> Prepared:
    """Grids, index config, baseline and quintiles for one dataset. For sensitivity runs, ``risk_config``
    replaces the shipped risk-index.toml and ``prior_minimum`` the floor of the default prior (the prior of
    feeds risk-index.toml has no prior for, as these two)."""
    train = train or dataset.train
    settings = Settings(feeds_config_path=REAL_FEEDS)
    if risk_config is not None:
        settings = Settings(feeds_config_path=REAL_FEEDS, risk_config_path=risk_config)
    feeds = load_feeds(settings, entry_points=[])
    index = load_index(settings, feeds).config  # as the worker builds it
    if prior_minimum is not None:
        default = replace(index.baseline.default_prior, minimum=prior_minimum)
        index = replace(index, version=f"{index.version}+default-prior-minimum-{prior_minimum:g}",
                        baseline=replace(index.baseline, default_prior=default))  # fmt: skip
    spec = feeds[dataset.feed]
    in_train = dataset.between(*train)
    points = (
        LabelledPoint(float(dataset.lon[i]), float(dataset.lat[i]), {k: str(v[i]) for k, v in dataset.labels.items()})
        for i in in_train
    )
    document = generate_registry(dataset.bbox, cell_metres, name=dataset.name, prefix=dataset.prefix, points=points)
    registry = GridRegistry.from_document(document)
    grid_ids = [grid.grid_id for grid in registry.grids]
    position = {grid_id: i for i, grid_id in enumerate(grid_ids)}
    grid_of = np.full(len(dataset.time_s), -1, dtype=np.int64)
    for i, (lon, lat) in enumerate(zip(dataset.lon.tolist(), dataset.lat.tolist(), strict=True)):
        grid = registry.locate(lon, lat)
        if grid is not None:
            grid_of[i] = position[grid.grid_id]
    mapped = {c: spec.mapping[category_key(c)] for c in np.unique(dataset.category)}
    types = np.array([mapped[c].type for c in dataset.category])
    severities = np.array([mapped[c].severity for c in dataset.category])
    weights = np.array([index.event_weight(dataset.feed, t, s) for t, s in zip(types, severities, strict=True)])

    rows: Counter[tuple[str, str, str, int, int]] = Counter()
    for i in in_train[grid_of[in_train] >= 0]:
        key = (grid_ids[grid_of[i]], dataset.feed, str(types[i]), int(severities[i]), hour_of_week(dataset.time_s[i]))
        rows[key] += 1
    hours = (train[1] - train[0]).total_seconds() / 3600
    learned = learn(((*k, n) for k, n in rows.items()), index.event_weight, weeks=hours / 168,
                    version=f"{dataset.feed}-{train[0]:%Y%m%d}-{train[1]:%Y%m%d}", grids=grid_ids)  # fmt: skip
    profiles = [GridProfile(g.grid_id, g.grid_type, g.population) for g in registry.grids]
    baseline = BaselineModel(index.baseline, profiles, learned)
    located = in_train[grid_of[in_train] >= 0]
    history = rb.History(len(grid_ids), hours, grid_of[located], dataset.time_s[located])
    base_rate = np.bincount(history.grid, minlength=len(grid_ids)) / hours
    ranks = np.argsort(np.argsort(base_rate + np.arange(len(grid_ids)) * 1e-12, kind="stable"), kind="stable")
    quintile = ranks * QUINTILES // len(grid_ids)
    table = np.zeros((len(grid_ids), 168))
    np.add.at(table, (history.grid, rb.hour_of_week(history.time_s)), 1.0)
    return Prepared(dataset, registry, index, baseline, grid_ids, grid_of, types, severities, weights, base_rate,
                    quintile, table / (hours / 168), train, cell_metres, document)  # fmt: skip


def choose_incidents(
    prep: Prepared, period: tuple[float, float], per_cell: int, seed: int, min_events: int = MIN_EVENTS
) -> list[Incident]:
    rng = np.random.default_rng(seed)
    busy: dict[int, list[float]] = {}
    incidents = []
    start_lo, start_hi = period[0] + WARM_UP_S, period[1] - EXCUSED_S - 3600
    for q in range(QUINTILES):
        members = np.flatnonzero(prep.quintile == q)
        for multiplier in MULTIPLIERS:
            placed = 0
            while placed < per_cell:
                grid = int(rng.choice(members))
                start = float(np.floor(rng.uniform(start_lo, start_hi)))
                # One incident at a time per grid, with its excused hours apart from any other's.
                if any(abs(start - other) < 2 * EXCUSED_S for other in busy.get(grid, [])):
                    continue
                busy.setdefault(grid, []).append(start)
                expected = float(prep.how_mean[grid, hour_of_week(start)])
                extra = max(min_events, round((multiplier - 1) * expected * INCIDENT_S / 3600))
                offsets = np.sort(np.concatenate([[0.0], rng.uniform(0, INCIDENT_S, extra - 1)]))
                times = [start + float(np.floor(o)) for o in offsets]
                incidents.append(Incident(grid, q, multiplier, start, times, expected))
                placed += 1
    return incidents


@dataclass
class ReplayResult:
    timeline: Timeline
    batches: int
    events: int
    dead_letters: Counter[str]
    seconds: float
    # Each window's last (score, level), by (grid, window start): what the worker leaves in grid_windows.
    windows: dict[tuple[str, int], tuple[float, str]] = field(default_factory=dict)


def documents(prep: Prepared, incidents: list[Incident], period: tuple[float, float]) -> list[tuple[float, bytes]]:
    """(event time, envelope JSON) of the period's real events and the incidents' events, in time order."""
    dataset, feed = prep.dataset, prep.dataset.feed
    chosen = dataset.between(datetime.fromtimestamp(period[0], UTC), datetime.fromtimestamp(period[1], UTC))
    items: list[tuple[float, bytes]] = []
    for i in chosen:
        items.append((float(dataset.time_s[i]), orjson.dumps(envelope(
            feed, str(dataset.record_id[i]), str(dataset.category[i]), str(prep.types[i]), int(prep.severities[i]),
            float(dataset.time_s[i]), float(dataset.lon[i]), float(dataset.lat[i])))))  # fmt: skip
    incident_type = prep.dataset.incident_category
    event_type, severity = _incident_mapping(prep)
    for n, incident in enumerate(incidents):
        lon, lat = prep.registry.grids[incident.grid].centroid
        for j, t in enumerate(incident.times):
            items.append((t, orjson.dumps(envelope(feed, f"incident-{n}-{j}", incident_type, event_type, severity,
                                                   t, lon, lat))))  # fmt: skip
    items.sort(key=lambda item: item[0])
    return items


def replay(
    prep: Prepared, incidents: list[Incident], period: tuple[float, float], every_minute: bool = False
) -> ReplayResult:
    """The period's real events plus the incidents through pingan.streams.pipeline.process_batch (see the docstring)."""
    feed = prep.dataset.feed
    items = documents(prep, incidents, period)
    heartbeat_grid = prep.registry.grids[0]
    settings = Settings()
    window = WindowSpec(settings.window_seconds, settings.hop_window_seconds, settings.allowed_lateness_seconds,
                        prep.index.quiet_windows)  # fmt: skip
    state = PartitionState(window)
    models = {feed: load_feeds(Settings(feeds_config_path=REAL_FEEDS), entry_points=[])[feed].payload_model}
    config = PipelineConfig(index=prep.index, partitions=1, baseline=prep.baseline, rules=FeedRules(models, {}))
    timeline = Timeline()
    windows: dict[tuple[str, int], tuple[float, str]] = {}
    dead: Counter[str] = Counter()
    offset = batches = 0
    began = time.perf_counter()
    first_minute = int(period[0] // 60)
    last_minute = math.ceil(period[1] / 60)
    minutes_per_bucket = window.bucket_seconds // 60
    position = 0
    minute = first_minute
    while minute < last_minute:
        # The next minute worth a batch: one with events, or the first of a bucket while any grid has state.
        next_event_minute = int(items[position][0] // 60) if position < len(items) else last_minute
        if not every_minute:
            has_state = bool(state.risks) or any(g != heartbeat_grid.grid_id for g in state.buckets)
            next_bucket_minute = minute if minute % minutes_per_bucket == 0 else (
                minute + minutes_per_bucket - minute % minutes_per_bucket)  # fmt: skip
            minute = min(next_event_minute, next_bucket_minute) if has_state else next_event_minute
            if minute >= last_minute:
                break
        records = []
        while position < len(items) and items[position][0] < (minute + 1) * 60:
            records.append(Record("real", 0, offset, None, items[position][1], None))
            offset += 1
            position += 1
        beat = envelope(feed, f"hb-{minute}", HEARTBEAT, HEARTBEAT, 1, minute * 60 + 59.0, *heartbeat_grid.centroid)
        records.append(Record("real", 0, offset, None, orjson.dumps(beat), None))
        offset += 1
        now = datetime.fromtimestamp((minute + 1) * 60 + 1, UTC)
        result = process_batch(records, state, prep.registry, config, now=now)
        batches += 1
        for letter in result.dead_letters:
            dead[letter.kind] += 1
        for update in result.risk_updates:
            timeline.add(update.grid_id, update.as_of, update.level)
        for row in result.window_rows:
            windows[(row.grid_id, int(row.window_start.timestamp()))] = (row.score, row.level)
        minute += 1
    return ReplayResult(timeline, batches, len(items), dead, time.perf_counter() - began, windows)


def _incident_mapping(prep: Prepared) -> tuple[str, int]:
    """(type, severity) of the incidents' category, through the feed's own table."""
    feed = load_feeds(Settings(feeds_config_path=REAL_FEEDS), entry_points=[])[prep.dataset.feed]
    mapped = feed.mapping[category_key(prep.dataset.incident_category)]
    return mapped.type, mapped.severity


def level_changes(timeline: Timeline, grid_id: str) -> list[tuple[float, bool]]:
    return [(as_of.timestamp(), level in ALERTING) for as_of, level in timeline.changes.get(grid_id, [])]


def index_detection(prep: Prepared, timeline: Timeline, incident: Incident) -> float | None:
    """Seconds from the incident's first event to the grid's first orange/red at or after it."""
    alerting_before = False
    for at, alerting in level_changes(timeline, prep.grid_ids[incident.grid]):
        if at < incident.start:
            alerting_before = alerting
            continue
        if alerting_before:
            return 0.0
        if alerting:
            return at - incident.start
    return 0.0 if alerting_before else None


def excused_hours(incidents: list[Incident]) -> set[tuple[int, int]]:
    excused = set()
    for incident in incidents:
        first, last = int(incident.start // 3600), int((incident.start + EXCUSED_S) // 3600)
        excused |= {(incident.grid, h) for h in range(first, last + 1)}
    return excused


@dataclass
class Method:
    name: str
    threshold: str
    flagged: int
    total: int
    by_quintile: list[tuple[int, int]]  # (flagged, total) per quintile


def flag_counts(prep: Prepared, flagged: set[tuple[int, int]], excused: set[tuple[int, int]],
                period: tuple[float, float]) -> tuple[int, int, list[tuple[int, int]]]:  # fmt: skip
    first_hour = int((period[0] + WARM_UP_S) // 3600)
    last_hour = int(period[1] // 3600)  # exclusive
    hours = last_hour - first_hour
    counted = {(g, h) for g, h in flagged if first_hour <= h < last_hour} - excused
    excused_in = [(g, h) for g, h in excused if first_hour <= h < last_hour]
    per_q = []
    for q in range(QUINTILES):
        grids_q = int(np.sum(prep.quintile == q))
        ex = sum(1 for g, _ in excused_in if prep.quintile[g] == q)
        per_q.append((sum(1 for g, _ in counted if prep.quintile[g] == q), grids_q * hours - ex))
    return len(counted), len(prep.grid_ids) * hours - len(excused_in), per_q


def evaluate(
    prep: Prepared, period: tuple[float, float], per_cell: int, seed: int, min_events: int = MIN_EVENTS
) -> dict:
    incidents = choose_incidents(prep, period, per_cell, seed, min_events)
    run = replay(prep, incidents, period)
    excused = excused_hours(incidents)
    # --- the index
    alerting = run.timeline.alerting_hours(datetime.fromtimestamp(period[1], UTC))
    position = {grid_id: i for i, grid_id in enumerate(prep.grid_ids)}
    index_hours = {(position[g], h) for g, h in alerting}
    flagged, total, per_q = flag_counts(prep, index_hours, excused, period)
    methods = [Method(INDEX, prep.index.version, flagged, total, per_q)]
    for incident in incidents:
        incident.detected_after[INDEX] = index_detection(prep, run.timeline, incident)
    rate = flagged / total if total else 0.0

    # --- simple baselines, on the same events (background located in a grid, plus the incidents)
    dataset = prep.dataset
    chosen = dataset.between(datetime.fromtimestamp(period[0], UTC), datetime.fromtimestamp(period[1], UTC))
    chosen = chosen[prep.grid_of[chosen] >= 0]
    inc_grid = np.array([i.grid for i in incidents for _ in i.times], dtype=np.int64)
    inc_time = np.array([t for i in incidents for t in i.times])
    incident_weight = prep.index.event_weight(dataset.feed, *_incident_mapping(prep))
    grid = np.concatenate([prep.grid_of[chosen], inc_grid])
    times = np.concatenate([dataset.time_s[chosen], inc_time])
    weight = np.concatenate([prep.weights[chosen], np.full(len(inc_time), incident_weight)])
    order = np.lexsort((times, grid))
    grid, times, weight = grid[order], times[order], weight[order]
    cumulative = np.concatenate([[0.0], np.cumsum(weight)])
    windows = rb.Windows.of(grid, times, weight)
    in_train = dataset.between(*prep.train)
    located = in_train[prep.grid_of[in_train] >= 0]
    hours = (prep.train[1] - prep.train[0]).total_seconds() / 3600
    history = rb.History(len(prep.grid_ids), hours, prep.grid_of[located], dataset.time_s[located])
    scores = {
        RAW_COUNT: rb.raw_count(),
        WEIGHTED_COUNT: rb.weighted_count(),
        "per-grid mean + k sd": rb.mean_sigma(history),
        "Poisson tail, no shrinkage": rb.poisson_unshrunk(history),
    }
    starts = np.searchsorted(grid, np.arange(len(prep.grid_ids)))
    ends = np.searchsorted(grid, np.arange(len(prep.grid_ids)), side="right")
    first_hour = int((period[0] + WARM_UP_S) // 3600)
    for name, score in scores.items():
        values = score(windows.grid, windows.end_bucket, windows.count, windows.weighted)
        keys, best = rb.grid_hour_max(windows, values)
        g_of, h_of = keys >> 32, keys & ((1 << 32) - 1)
        eligible = np.array([(int(g), int(h)) not in excused for g, h in zip(g_of, h_of, strict=True)], dtype=bool)
        eligible &= (h_of >= first_hour) & (h_of < int(period[1] // 3600))
        threshold, _ = rb.threshold_for_rate(best[eligible], total, rate)
        variants = [(name, threshold)]
        below = best[eligible][best[eligible] < threshold]
        if name in {RAW_COUNT, WEIGHTED_COUNT} and len(below):
            # Counts are whole numbers: the next threshold down flags more than the index; both are shown.
            variants.append((f"{name}, next threshold down", float(below.max())))
        for label, value in variants:
            hit = {(int(g), int(h)) for g, h in zip(g_of[best >= value], h_of[best >= value], strict=True)}
            f, t, q = flag_counts(prep, hit, excused, period)
            methods.append(Method(label, f">= {value:.3g}", f, t, q))
            for incident in incidents:
                incident.detected_after[label] = _baseline_detection(
                    incident, times, cumulative, starts, ends, score, value
                )
    # static hot spots
    projection = _projection(prep)
    centroids = np.array([projection(*g.centroid) for g in prep.registry.grids])
    train_xy = np.array([projection(x, y) for x, y in zip(dataset.lon[located], dataset.lat[located], strict=True)])
    density = rb.kde_density(centroids, train_xy)
    hours_n = int(period[1] // 3600) - first_hour
    ranked = np.argsort(-density)
    # A static map flags whole grids at all hours: at the index's rate that is usually less than one grid, so
    # it is shown at the target's 2 % of grid-hours as well.
    for label, share in (("kernel-density hot spots (static)", rate), (KDE_AT_TARGET, TARGET_FLAG_RATE)):
        top = math.floor(share * len(prep.grid_ids))
        hot = set(ranked[:top].tolist())
        hot_hours = {(g, h) for g in hot for h in range(first_hour, first_hour + hours_n)}
        f, t, q = flag_counts(prep, hot_hours, excused, period)
        methods.append(Method(label, f"top {top} grids", f, t, q))
        for incident in incidents:
            incident.detected_after[label] = 0.0 if incident.grid in hot else None

    return {
        "incidents": incidents, "methods": methods, "replay": run, "rate": rate,
        "calibration": calibration(prep, period),
    }  # fmt: skip


def _projection(prep: Prepared) -> Callable[[float, float], tuple[float, float]]:
    lat0 = (prep.dataset.bbox[1] + prep.dataset.bbox[3]) / 2
    k = math.radians(1.0) * 6_371_008.8
    return lambda lon, lat: (lon * k * math.cos(math.radians(lat0)), lat * k)


def _baseline_detection(incident: Incident, times: np.ndarray, cumulative: np.ndarray, starts: np.ndarray,
                        ends: np.ndarray, score: rb.Score, threshold: float) -> float | None:  # fmt: skip
    """First arrival (at or after the incident's start, within an hour) whose window reaches the threshold.

    ``times`` are sorted by grid then time, ``cumulative`` the running sum of their weights (from 0)."""
    first = starts[incident.grid]
    cell = times[first : ends[incident.grid]]
    lo, hi = np.searchsorted(cell, [incident.start, incident.start + 3600 + 1e-6])
    for t in cell[lo:hi]:
        bucket = math.floor(t / rb.BUCKET_S)
        window_lo = int(np.searchsorted(cell, (bucket - rb.HOP_BUCKETS + 1) * rb.BUCKET_S))
        window_hi = int(np.searchsorted(cell, t, side="right"))
        weighted = cumulative[first + window_hi] - cumulative[first + window_lo]
        value = score(np.array([incident.grid]), np.array([bucket]), np.array([window_hi - window_lo]),
                      np.array([weighted]))[0]  # fmt: skip
        if value >= threshold:
            return float(t - incident.start)
    return None


def calibration(prep: Prepared, period: tuple[float, float], bins: int = 8) -> list[dict]:
    """Expected (the worker's baseline) vs observed weighted count per grid-hour of the period, by bins of
    the expected value; with the observed events' variance over mean (1 for Poisson)."""
    feed = prep.dataset.feed
    expected = np.array([prep.baseline.hourly(g, feed) for g in prep.grid_ids])  # grids x 168, weighted / h
    first, last = int(period[0] // 3600), int(period[1] // 3600)
    hours = np.arange(first, last)
    occurrences = np.bincount((hours + 72) % 168, minlength=168).astype(float)
    chosen = prep.dataset.between(datetime.fromtimestamp(period[0], UTC), datetime.fromtimestamp(period[1], UTC))
    chosen = chosen[prep.grid_of[chosen] >= 0]
    g = prep.grid_of[chosen]
    h = np.floor(prep.dataset.time_s[chosen] / 3600).astype(np.int64)
    observed = np.zeros_like(expected)
    np.add.at(observed, (g, (h + 72) % 168), prep.weights[chosen])
    key, per_hour = np.unique(g * (1 << 32) + h, return_counts=True)
    squares = np.zeros_like(expected)
    np.add.at(squares, (key >> 32, ((key & ((1 << 32) - 1)) + 72) % 168), per_hour.astype(float) ** 2)
    events = np.zeros_like(expected)
    np.add.at(events, (g, (h + 72) % 168), 1.0)
    flat_e, flat_n = expected.ravel(), np.tile(occurrences, len(prep.grid_ids))
    order = np.argsort(flat_e)
    cumulative = np.cumsum(flat_n[order]) / flat_n.sum()
    edges = np.searchsorted(cumulative, np.linspace(0, 1, bins + 1)[1:-1])
    rows = []
    for part in np.split(order, edges):
        if len(part) == 0:
            continue
        n = flat_n[part].sum()
        e = (flat_e[part] * flat_n[part]).sum() / n
        o = observed.ravel()[part].sum() / n
        ev = events.ravel()[part].sum() / n
        var = squares.ravel()[part].sum() / n - ev**2
        rows.append({"grid_hours": int(n), "expected_min": float(flat_e[part].min()),
                     "expected_max": float(flat_e[part].max()), "expected": float(e), "observed": float(o),
                     "dispersion": float(var / ev) if ev > 0 else float("nan")})  # fmt: skip
    return rows


# --- reporting ---------------------------------------------------------------------------------------------


def _recall(incidents: list[Incident], method: str, limit_min: int) -> float:
    hits = [i for i in incidents if (d := i.detected_after.get(method)) is not None and d <= limit_min * 60]
    return len(hits) / len(incidents) if incidents else float("nan")


def report(prep: Prepared, result: dict, period: tuple[float, float], per_cell: int, seed: int) -> tuple[str, dict]:
    incidents: list[Incident] = result["incidents"]
    methods: list[Method] = result["methods"]
    run: ReplayResult = result["replay"]
    ds = prep.dataset
    index_name = methods[0].name
    start, end = (datetime.fromtimestamp(p, UTC) for p in period)
    lines = [
        f"**{ds.name}**: {len(prep.grid_ids)} grids of {prep.cell_metres:g} m (cells with a training event); "
        f"baseline learned on {prep.train[0]:%Y-%m-%d}..{prep.train[1]:%Y-%m-%d} "
        f"({len(ds.between(*prep.train)):,} events), evaluated on {start:%Y-%m-%d}..{end:%Y-%m-%d} UTC "
        f"({run.events - sum(len(i.times) for i in incidents):,} real events, {len(incidents)} incidents, "
        f"seed {seed}); "
        f"index config {prep.index.version}; event times {ds.time_note}. Replay: {run.batches:,} batches through "
        f"process_batch in {run.seconds:.0f} s; dead letters: "
        + (", ".join(f"{n} {k}" for k, n in sorted(run.dead_letters.items())) or "none")
        + ".",
        "",
        "| base-rate quintile | grids | events/h per grid (median) | flag rate | incidents | median events added "
        "| recall 15 min (2x/3x/5x) | recall 30 min (2x/3x/5x) | recall 60 min (2x/3x/5x) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    index_method = methods[0]
    for q in range(QUINTILES):
        group = [i for i in incidents if i.quintile == q]
        f, t = index_method.by_quintile[q]
        cells = []
        for limit in LIMITS_MIN:
            cells.append(" / ".join(f"{_recall([i for i in group if i.multiplier == m], index_name, limit):.2f}"
                                    for m in MULTIPLIERS))  # fmt: skip
        median_rate = float(np.median(prep.base_rate[prep.quintile == q]))
        median_added = float(np.median([len(i.times) for i in group])) if group else 0
        lines.append(f"| Q{q + 1} | {int(np.sum(prep.quintile == q))} | {median_rate:.4f} | {f / t:.3%} | {len(group)} "
                     f"| {median_added:.0f} | {cells[0]} | {cells[1]} | {cells[2]} |")  # fmt: skip
    lines += [
        f"| all | {len(prep.grid_ids)} | {float(np.median(prep.base_rate)):.4f} "
        f"| **{index_method.flagged / index_method.total:.3%}** "
        f"| {len(incidents)} | {float(np.median([len(i.times) for i in incidents])):.0f} | "
        + " | ".join(" / ".join(f"{_recall([i for i in incidents if i.multiplier == m], index_name, limit):.2f}"
                                for m in MULTIPLIERS) for limit in LIMITS_MIN) + " |",
        "",
        f"Simple baselines at the index's flag rate ({result['rate']:.3%} of grid-hours; a baseline's ties are not "
        "split, so it may flag a little less): recall within 30 minutes at 3x, by quintile, and over every size.",
        "",
        "| method | threshold | flag rate | Q1 | Q2 | Q3 | Q4 | Q5 | all at 3x | all sizes, 30 min "
        "| all sizes, 60 min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for method in methods:
        three = [i for i in incidents if i.multiplier == 3]
        per_q = [f"{_recall([i for i in three if i.quintile == q], method.name, 30):.2f}" for q in range(QUINTILES)]
        lines.append(f"| {method.name} | {method.threshold} | {method.flagged / method.total:.3%} | "
                     + " | ".join(per_q) + f" | {_recall(three, method.name, 30):.2f} | "
                     f"{_recall(incidents, method.name, 30):.2f} | "
                     f"{_recall(incidents, method.name, 60):.2f} |")  # fmt: skip
    lines += [
        "",
        "Calibration over the evaluation period: the worker's expected weighted count per grid-hour (learned "
        "baseline) against what happened, in bins of equal grid-hours by expected value; dispersion is the "
        "variance over the mean of events per grid-hour (1 for Poisson).",
        "",
        "| grid-hours | expected range (weighted/h) | mean expected | mean observed | observed / expected "
        "| dispersion |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["calibration"]:
        ratio = row["observed"] / row["expected"] if row["expected"] else float("nan")
        lines.append(f"| {row['grid_hours']:,} | {row['expected_min']:.3f}-{row['expected_max']:.3f} | "
                     f"{row['expected']:.4f} | {row['observed']:.4f} | {ratio:.2f} | "
                     f"{row['dispersion']:.2f} |")  # fmt: skip
    record = {
        "dataset": ds.name, "config_version": prep.index.version, "baseline_version": prep.baseline.version,
        "cell_metres": prep.cell_metres, "grids": len(prep.grid_ids), "train": [str(p) for p in prep.train],
        "evaluate": [str(start), str(end)], "incidents": len(incidents), "per_cell": per_cell, "seed": seed,
        "min_events": min(len(i.times) for i in incidents) if incidents else None,
        "methods": {m.name: {"threshold": m.threshold, "flag_rate": m.flagged / m.total,
                             "flag_rate_by_quintile": [f / t for f, t in m.by_quintile],
                             "recall_30min_3x_by_quintile": [
                                 _recall([i for i in incidents if i.multiplier == 3 and i.quintile == q], m.name, 30)
                                 for q in range(QUINTILES)],
                             "recall_30min_all": _recall(incidents, m.name, 30)} for m in methods},
    }  # fmt: skip
    return "\n".join(lines), record


def plot(prep: Prepared, result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    incidents: list[Incident] = result["incidents"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for multiplier, marker in zip(MULTIPLIERS, ("o", "s", "^"), strict=True):
        group = [i for i in incidents if i.multiplier == multiplier]
        xs = [max(prep.base_rate[i.grid], 1e-5) for i in group]
        ys = [d / 60 if (d := i.detected_after[result["methods"][0].name]) is not None else 75 for i in group]
        left.scatter(xs, ys, marker=marker, label=f"{multiplier}x", alpha=0.6, s=14)
    left.set_xscale("log")
    left.axhline(30, color="grey", linestyle="--", linewidth=1)
    left.set_xlabel("grid's training rate, events per hour (log)")
    left.set_ylabel("minutes to orange/red (75 = never)")
    left.set_title(f"{prep.dataset.name}: time to detection")
    left.legend(fontsize=8)
    rows = result["calibration"]
    right.loglog([r["expected"] for r in rows], [max(r["observed"], 1e-6) for r in rows], "o-", label="bins")
    lo = min(r["expected"] for r in rows)
    hi = max(r["expected"] for r in rows)
    right.loglog([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="observed = expected")
    right.set_xlabel("expected weighted count per grid-hour (baseline)")
    right.set_ylabel("observed (mean)")
    right.set_title("calibration, evaluation period")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--city", choices=[*LOADERS, "all"], default="all")
    parser.add_argument("--cell-metres", type=float, default=500.0)
    parser.add_argument("--per-cell", type=int, default=40, help="incidents per (quintile, multiplier)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--days", type=float, default=None, help="evaluate only the first DAYS of the period")
    parser.add_argument("--min-events", type=int, default=MIN_EVENTS, help="fewest events an incident adds")
    parser.add_argument("--risk-config", type=Path, default=None, help="another risk-index.toml (sensitivity)")
    parser.add_argument("--prior-minimum", type=float, default=None, help="floor of the default prior (sensitivity)")
    parser.add_argument("--record", action="store_true", help="append the run to docs/evaluation-runs.jsonl only")
    parser.add_argument("--write", action="store_true", help="write docs/evaluation.md, plots, run record")
    args = parser.parse_args()
    for city in LOADERS if args.city == "all" else [args.city]:
        dataset = LOADERS[city]()
        prep = prepare(dataset, args.cell_metres, risk_config=args.risk_config, prior_minimum=args.prior_minimum)
        begin, end = (p.timestamp() for p in dataset.evaluate)
        if args.days:
            end = min(end, begin + args.days * 86400)
        period = (begin, end)
        result = evaluate(prep, period, args.per_cell, args.seed, args.min_events)
        text, record = report(prep, result, period, args.per_cell, args.seed)
        print(text, flush=True)
        if args.write:
            docs = REPO_ROOT / "docs"
            plot(prep, result, docs / f"evaluation-{city}.png")
            replace_section(docs / "evaluation.md", f"real results {city}", f"{text}\n\n![](evaluation-{city}.png)")
        if args.write or args.record:
            record_run(record)


if __name__ == "__main__":
    main()
