-- A worker claims the queued job of the owner with the fewest jobs running
-- (store/evaluations.rs, `claim_evaluation`): each candidate's owner's
-- running jobs are counted in this index, not by scanning the owner's
-- finished ones.
CREATE INDEX evaluations_owner_running ON evaluations (owner, lease_until)
    WHERE status = 'running';
