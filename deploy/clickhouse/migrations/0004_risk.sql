-- Every change of a grid's risk (what the risk topic carries), and the latest one per grid.
CREATE TABLE IF NOT EXISTS risk_updates
(
    grid_id          LowCardinality(String),
    as_of            DateTime('UTC'),
    score            Float64,
    level            LowCardinality(String),
    previous_level   LowCardinality(String),
    window_events    UInt32,
    dominant_source  String,
    config_version   String,
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(as_of)
ORDER BY (grid_id, version);

CREATE TABLE IF NOT EXISTS risk_latest
(
    grid_id          LowCardinality(String),
    as_of            DateTime('UTC'),
    score            Float64,
    level            LowCardinality(String),
    previous_level   LowCardinality(String),
    window_events    UInt32,
    dominant_source  String,
    config_version   String,
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY grid_id;
