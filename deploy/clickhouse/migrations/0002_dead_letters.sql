-- Records that could not become events, with the reason and the original bytes. Keyed by their position
-- in the topic, so a replayed dead letter is stored once.
CREATE TABLE IF NOT EXISTS dead_letters
(
    topic           String,
    kafka_partition UInt16,
    kafka_offset    UInt64,
    received_at     DateTime('UTC'),
    kind            LowCardinality(String),
    field           String,
    reason          String,
    raw             String,
    ingested_at     DateTime('UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, kafka_partition, kafka_offset);
