-- Retention of evaluation jobs (store/eval_retention.rs): a deleted job
-- is a tombstone (status 'deleted', request '' and no result or error)
-- removed once its UTC creation day is over, and a model keeps its newest
-- 1,000 finished jobs. One index for each prune statement: tombstones by
-- creation time, and a model's finished jobs by seq (also what counts the
-- models over the cap).
CREATE INDEX evaluations_tombstones ON evaluations (created_at) WHERE status = 'deleted';
CREATE INDEX evaluations_finished ON evaluations (owner, model_id, seq)
    WHERE status IN ('done', 'failed', 'cancelled');
-- Tombstones left before this version drop their payload now.
UPDATE evaluations SET request = '', result = NULL, error = NULL WHERE status = 'deleted';
