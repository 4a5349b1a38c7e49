-- Learned baselines (pingan/index/baseline.py): what each grid normally sees of each source in each hour of the
-- week. `pingan baselines learn` writes one snapshot per run, named by `version`; the worker loads the newest
-- at start-up. Old snapshots stay for audit: a risk value names the baseline version it was scored against.
CREATE TABLE IF NOT EXISTS baselines
(
    version        String,
    learned_at     DateTime('UTC'),
    history_from   DateTime('UTC'),
    history_to     DateTime('UTC'),
    weeks          Float64,
    config_version String,
    source         String,
    -- sum of squared event weights / sum of weights: the unit in which surprise counts events
    unit_weight    Float64,
    weighted       Float64,
    events         UInt64
)
ENGINE = ReplacingMergeTree(learned_at)
ORDER BY (version, source);

-- Weighted event count of one grid, source and hour of the week (0 = Monday 00:00 UTC) summed over the
-- snapshot's history; cells with no events are absent.
CREATE TABLE IF NOT EXISTS baseline_cells
(
    version      String,
    grid_id      String,
    source       String,
    hour_of_week UInt8,
    weighted     Float64
)
ENGINE = ReplacingMergeTree()
ORDER BY (version, grid_id, source, hour_of_week);

-- The grids of the registry while the snapshot's history was recorded. A grid listed here without cells saw
-- nothing (its expectation shrinks); a grid missing here is newer than the snapshot (it gets its prior).
CREATE TABLE IF NOT EXISTS baseline_grids
(
    version String,
    grid_id String
)
ENGINE = ReplacingMergeTree()
ORDER BY (version, grid_id);
