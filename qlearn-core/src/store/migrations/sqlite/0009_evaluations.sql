-- Offline evaluations as jobs (issue 18): one row per job. seq orders a
-- model's listing (newest first, keyset on seq) and the queue (oldest
-- first). request, result and error are JSON (store/evaluations.rs);
-- lease_token and lease_until belong to the instance running the job (a
-- running job whose lease expired is claimed again). A deleted job keeps
-- its row (status 'deleted') so it stays counted in its day's limit.
CREATE TABLE evaluations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    lease_token TEXT,
    lease_until INTEGER,
    request TEXT NOT NULL,
    decisions_read INTEGER NOT NULL DEFAULT 0,
    decisions_total INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT
);

CREATE INDEX evaluations_model ON evaluations (owner, model_id, seq);
CREATE INDEX evaluations_owner_day ON evaluations (owner, created_at);
CREATE INDEX evaluations_queue ON evaluations (seq) WHERE status IN ('queued', 'running');
