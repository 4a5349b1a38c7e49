-- Which units each grid belongs to, copied from the grid registry (pingan.store.grid_units.sync, run by
-- `pingan publish`), so analysts can JOIN events to communities and police stations in SQL. A grid removed
-- from the registry disappears at the next sync; read with FINAL (two syncs at once insert twice).
CREATE TABLE IF NOT EXISTS grid_units
(
    grid_id            String,
    community_id       String,
    subdistrict_id     String,
    district_id        String,
    police_station_id  String,
    population         UInt32,
    synced_at          DateTime('UTC')
)
ENGINE = ReplacingMergeTree(synced_at)
ORDER BY grid_id;

-- The published public-safety index ("the PM2.5 way", docs/risk-index.md): one row per period, unit level
-- and unit. Periods are local calendar days, ISO weeks (Monday first) or months in the configured time zone;
-- period_end is the first day after the period. Publishing a period again rewrites the same keys; read
-- with FINAL. score: 0-100, 100 = safest; rank 1 = safest; change = score - previous_score.
CREATE TABLE IF NOT EXISTS published_index
(
    period_kind         LowCardinality(String),
    period_start        Date,
    period_end          Date,
    unit_level          LowCardinality(String),
    unit_id             String,
    unit_name           String,
    district_id         String,
    population          UInt32,
    incidents           UInt32,
    weighted            Float64,
    per_10k             Float64,
    baseline_per_10k    Float64,
    ratio               Float64,
    score               Float64,
    level               LowCardinality(String),
    rank                UInt16,
    ranked_units        UInt16,
    dominant_type       String,
    previous_score      Float64,
    previous_rank       UInt16,
    previous_incidents  UInt32,
    change              Float64,
    rank_change         Int16,
    flagged             UInt8,
    previously_flagged  UInt8,
    -- 'entered' (wears the hat), 'left' (takes it off), 'still', or '' (never flagged in either period)
    flag_change         LowCardinality(String),
    config_version      String,
    timezone            String,
    computed_at         DateTime('UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(period_start)
ORDER BY (period_kind, unit_level, period_start, unit_id);
