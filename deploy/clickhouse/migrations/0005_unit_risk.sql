-- Snapshots of the roll-ups (`pingan rollup`): the risk of every community, subdistrict, district and police
-- station at one instant, computed from risk_latest and the grid registry (docs/risk-index.md, "Roll-ups").
-- as_of is the newest grid assessment the snapshot saw, so re-running with no new risk rewrites the same
-- key; computed_at only decides which of two such rows survives a merge. Read with FINAL.
CREATE TABLE IF NOT EXISTS unit_risk
(
    unit_level      LowCardinality(String),
    unit_id         String,
    as_of           DateTime('UTC'),
    name            String,
    -- the worst grid level, and the two scores: population-weighted mean and worst grid
    level           LowCardinality(String),
    weighted_score  Float64,
    worst_score     Float64,
    grids           UInt32,
    population      UInt32,
    grids_green     UInt32,
    grids_yellow    UInt32,
    grids_orange    UInt32,
    grids_red       UInt32,
    -- the worst grids, worst first (parallel arrays: Map does not exist on 18.16)
    top_grids       Array(String),
    top_scores      Array(Float64),
    top_levels      Array(String),
    computed_at     DateTime('UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(as_of)
ORDER BY (unit_level, unit_id, as_of);
