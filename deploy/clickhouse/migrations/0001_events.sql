-- Every valid event, stored once per event_id. A redelivered event (worker replay, producer retry) is a
-- second identical row that merges away; reads that must be exact use FINAL or uniqExact(event_id).
-- Times are DateTime('UTC') plus a millisecond column: DateTime64 does not exist on ClickHouse 18.16.
CREATE TABLE IF NOT EXISTS events
(
    event_id        String,
    source          LowCardinality(String),
    type            LowCardinality(String),
    severity        UInt8,
    event_time      DateTime('UTC'),
    event_time_ms   UInt16,
    receive_time    DateTime('UTC'),
    grid_id         LowCardinality(String),
    lon             Nullable(Float64),
    lat             Nullable(Float64),
    device_id       String,
    schema_version  UInt16,
    payload         String,
    -- 1 when the event arrived after its window had closed: kept for history, not in the live index.
    late            UInt8,
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime('UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (grid_id, event_time, event_id);
