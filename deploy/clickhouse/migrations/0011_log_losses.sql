-- What the worker found when the broker lost a log (the local broker keeps topics in memory and comes back
-- empty; a topic deleted and recreated): a partition whose log is shorter than what was done, or holds other
-- records ("log_lost"), or a partition whose window-state changelog holds nothing while ClickHouse has its
-- events ("state_lost"); and how its window state was made whole again. Kept here, not on the broker: the
-- broker is what lost it. One row per partition and detection; the rebuild's row replaces it (version).
CREATE TABLE IF NOT EXISTS log_losses
(
    detected_at     DateTime('UTC'),
    worker          String,
    topic           String,
    kafka_partition UInt16,
    reason          LowCardinality(String),
    -- records done in the old log (checkpoint or committed offset), and where the log ended when found (-1:
    -- unknown); reading goes on from restart_offset of the new log
    done_offset     Int64,
    end_offset      Int64,
    restart_offset  Int64,
    -- "kept" (the worker's own state), "clickhouse" (replayed from events), "" while pending
    rebuilt_from    LowCardinality(String),
    rebuilt_events  UInt64,
    rebuilt_at      DateTime('UTC'),
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(detected_at)
ORDER BY (topic, kafka_partition, detected_at, worker);
