-- The evaluation prune (store/eval_retention.rs) counts against the
-- finished-jobs cap only the models with a job finished since its previous
-- run: found in this index, so no run scans every finished job.
CREATE INDEX evaluations_finished_at ON evaluations (finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');
