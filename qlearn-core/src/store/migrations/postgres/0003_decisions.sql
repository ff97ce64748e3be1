-- Decisions and delayed rewards (issue 14).
-- models.decisions: the model's decisions setting as JSON (NULL: off).
-- decision_logs: one serialized decision log per model (JSON), written in
-- the same transaction as the Q-rows a decision call changes, under the
-- model's row lock; next_deadline_ms is the earliest open reward window, so
-- settling finds the models with a passed deadline without reading any log.
ALTER TABLE models ADD COLUMN decisions TEXT;

CREATE TABLE decision_logs (
    mid BIGINT PRIMARY KEY REFERENCES models (mid) ON DELETE CASCADE,
    log BYTEA NOT NULL,
    next_deadline_ms BIGINT
);

CREATE INDEX decision_logs_deadline ON decision_logs (next_deadline_ms)
    WHERE next_deadline_ms IS NOT NULL;
