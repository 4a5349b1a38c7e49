-- What command centres did with alerts (acknowledge, assign, dispatch, resolve, reopen, merge, note): one
-- row per action, append-only. An action is idempotent by action_id: a retried POST or a replayed topic
-- may store a copy, merges fold copies with the same (grid_id, action_id), and readers keep the earliest
-- copy of each id (pingan.incidents.dedupe), so an action counts once however often it was stored.
-- incident_id is the incident the action was taken on when it was received (the alert id that opened it), for
-- SQL; the API's state comes from the fold of alerts and actions. `at` is when the API received it (second precision on 18.16) plus at_ms, its milliseconds.
CREATE TABLE IF NOT EXISTS alert_actions
(
    action_id    String,
    alert_id     String,
    incident_id  String,
    grid_id      LowCardinality(String),
    kind         LowCardinality(String),
    actor        String,
    actor_scope  String,
    at           DateTime('UTC'),
    at_ms        UInt16,
    note         String,
    assignee     String,
    outcome      LowCardinality(String),
    target       String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (grid_id, action_id);
