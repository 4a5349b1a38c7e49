-- Hysteresis and explanations on every risk row, and the alerts table.
ALTER TABLE risk_updates ADD COLUMN live_level LowCardinality(String) DEFAULT '';
ALTER TABLE risk_updates ADD COLUMN explanation String DEFAULT '';
ALTER TABLE risk_latest ADD COLUMN live_level LowCardinality(String) DEFAULT '';
ALTER TABLE risk_latest ADD COLUMN explanation String DEFAULT '';

-- Each escalation to orange or red, and each step down from them. alert_id is (grid, version): a replay
-- writes the same key. Readers page through it in (version, grid_id) order with an opaque cursor.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id        String,
    grid_id         LowCardinality(String),
    kind            LowCardinality(String),
    level           LowCardinality(String),
    previous_level  LowCardinality(String),
    score           Float64,
    as_of           DateTime('UTC'),
    version         UInt64,
    explanation     String,
    config_version  String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(as_of)
ORDER BY (version, grid_id);
