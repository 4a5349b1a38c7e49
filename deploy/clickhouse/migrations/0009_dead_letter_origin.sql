-- Dead letters from every way in (worker, ingest gateway, webhooks, file tailer) in one table: which way,
-- which feed and adapter, the origin as one string (topic/partition/offset, file:path@offset or
-- http:producer/request#index; its three parts stay the key), the original size and SHA-256 when raw is a
-- truncated copy, and whether a replay has sent it on (pingan dead-letters replay).
ALTER TABLE dead_letters ADD COLUMN source LowCardinality(String) DEFAULT 'worker';
ALTER TABLE dead_letters ADD COLUMN feed LowCardinality(String) DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN adapter LowCardinality(String) DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN origin String DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN raw_size UInt64 DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN raw_sha256 String DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN redacted UInt8 DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN replayed_at DateTime('UTC') DEFAULT toDateTime(0);
ALTER TABLE dead_letters ADD COLUMN replayed_as String DEFAULT '';
