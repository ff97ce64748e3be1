-- Offline evaluations as jobs (issue 18): one row per job; instances claim jobs under
-- FOR UPDATE SKIP LOCKED, and a user's creations serialise on the user's row. seq orders a
-- model's listing (newest first, keyset on seq) and the queue (oldest
-- first). request, result and error are JSON (store/evaluations.rs);
-- lease_token and lease_until belong to the instance running the job (a
-- running job whose lease expired is claimed again). A deleted job keeps
-- its row (status 'deleted') so it stays counted in its day's limit.
CREATE TABLE evaluations (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    lease_token TEXT,
    lease_until BIGINT,
    request TEXT NOT NULL,
    decisions_read BIGINT NOT NULL DEFAULT 0,
    decisions_total BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT
);

CREATE INDEX evaluations_model ON evaluations (owner, model_id, seq);
CREATE INDEX evaluations_owner_day ON evaluations (owner, created_at);
CREATE INDEX evaluations_queue ON evaluations (seq) WHERE status IN ('queued', 'running');

-- A job reads the decision log newest first by (time_ms, id), in keyset
-- pages.
CREATE INDEX decisions_time_id ON decisions (mid, time_ms, id);
