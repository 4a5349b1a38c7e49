-- One row per grid and tumbling window (emit on update: a later version replaces an earlier one; replaying
-- the same events yields the same version and the same values). score and level are the grid's risk at
-- the window's end, computed over the hopping window that ends there.
CREATE TABLE IF NOT EXISTS grid_windows
(
    grid_id         LowCardinality(String),
    window_start    DateTime('UTC'),
    window_seconds  UInt32,
    events          UInt32,
    weighted        Float64,
    sources         Array(String),
    source_counts   Array(UInt32),
    types           Array(String),
    type_counts     Array(UInt32),
    score           Float64,
    level           LowCardinality(String),
    config_version  String,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (grid_id, window_start, window_seconds);
