"""Bytes per event on the wire and on disk: the measured inputs of docs/scaling.md.

    .venv/bin/python -m bench.storage_footprint [--hours 24] [--rate 1.0]

Generates the demo city's events (producers/simulator.py, realistic payloads) for ``--hours`` of event time,
measures the Kafka message size (raw, and gzip per 1,000-message batch as a producer would compress it),
runs them through the pure pipeline (streams/pipeline.py) and stores events, windows and risk in a fresh
ClickHouse 18.16 exactly as the worker writes them; after OPTIMIZE ... FINAL (what merges reach in steady
state) it reads each table's rows and bytes from system.parts.
"""

from __future__ import annotations

import argparse
import tempfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from pingan import services
from pingan.baselines import grid_profiles
from pingan.grids import GridRegistry
from pingan.index.baseline import BaselineModel
from pingan.index.scoring import load_config
from pingan.producers.simulator import CitySimulator
from pingan.settings import Settings
from pingan.store import events, risk, windows
from pingan.store.client import connect
from pingan.store.migrate import prepare_database
from pingan.streams.pipeline import PipelineConfig, Record, process_batch
from pingan.streams.windows import PartitionState, window_spec
from tests.support.processes import free_port

TABLES = ("events", "grid_windows", "risk_updates", "risk_latest")
KAFKA_BATCH = 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--rate", type=float, default=1.0, help="multiplier on the demo city's event rates")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pingan-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            clickhouse_port=free_port(),
            clickhouse_http_port=free_port(),
            clickhouse_database="footprint",
        )
        registry = GridRegistry.load(settings.grid_registry_path)
        end = datetime(2026, 11, 23, tzinfo=UTC)
        start = end - timedelta(hours=args.hours)
        simulator = CitySimulator(registry, seed=1, rate=args.rate, pseudonym_key=b"footprint", nonce="fp")
        documents = simulator.events_between(start, end)
        values = [orjson.dumps(d) for d in documents]
        keys = [str(d.get("grid_id") or "").encode() for d in documents]
        raw = sum(len(v) + len(k) for k, v in zip(keys, values, strict=True))
        gzipped = sum(len(zlib.compress(b"".join(values[i : i + KAFKA_BATCH]), 6))
                      for i in range(0, len(values), KAFKA_BATCH))  # fmt: skip

        index = load_config(settings.risk_config_path)
        baseline = BaselineModel(index.baseline, grid_profiles(registry))
        config = PipelineConfig(index=index, partitions=1, baseline=baseline)
        state = PartitionState(window_spec(settings, index))
        stamps = [int(t.timestamp() * 1000) for t in _times(documents)]
        records = [Record("footprint", 0, i, key, value, stamp)
                   for i, (key, value, stamp) in enumerate(zip(keys, values, stamps, strict=True))]  # fmt: skip
        services.up(settings)
        try:
            prepare_database(settings)
            executor = connect(settings)
            ingested_at = end
            for i in range(0, len(records), 5000):
                result = process_batch(records[i : i + 5000], state, registry, config, now=end + timedelta(hours=1))
                rows = [events.row(e, partition=0, offset=r.offset, late=late, ingested_at=ingested_at)
                        for e, r, late in result.stored]  # fmt: skip
                events.insert(executor, rows)
                windows.insert(executor, result.window_rows)
                risk.insert(executor, result.risk_updates)
            parts = {}
            for table in TABLES:
                executor.query(f"OPTIMIZE TABLE {table} FINAL")
                parts[table] = executor.query(
                    "SELECT sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(bytes_on_disk) "
                    "FROM system.parts WHERE database = currentDatabase() AND table = %(t)s AND active",
                    {"t": table},
                )[0]
            executor.close()
        finally:
            services.down(settings)

    count = len(documents)
    print(f"{count:,} events over {args.hours:g} h of the demo city (rate x{args.rate:g}), {len(registry.grids)} grids")
    print(f"Kafka message (key + JSON value): {raw / count:.0f} B raw, {gzipped / count:.0f} B gzip per "
          f"{KAFKA_BATCH}-message batch ({raw / gzipped:.1f}x)")  # fmt: skip
    print("| table | rows | rows per event | bytes on disk per row | compressed column bytes per row | uncompressed |")
    print("|---|---|---|---|---|---|")
    for table, (rows, compressed, uncompressed, on_disk) in parts.items():
        rows = int(rows or 0)
        per = lambda b, rows=rows: f"{b / rows:.1f}" if rows else "-"  # noqa: E731
        print(f"| {table} | {rows:,} | {rows / count:.3f} | {per(on_disk)} | {per(compressed)} | {per(uncompressed)} |")


def _times(documents: list[dict]) -> list[datetime]:
    """Each event's time as the record timestamp (a producer sends it near event time)."""
    return [datetime.fromisoformat(str(d["event_time"]).replace("Z", "+00:00")) for d in documents]


if __name__ == "__main__":
    main()
