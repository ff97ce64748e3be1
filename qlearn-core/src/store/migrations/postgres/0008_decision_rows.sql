-- Decisions a row each (issue 14): a decision call reads and writes only the
-- rows it touches, under the model's row lock (store/decision_rows.rs has
-- the column formats). The logs kept whole in decision_logs by version 3 are
-- turned into rows when a store connects (and their rows deleted).
-- decisions_due finds the open reward windows past their deadline (every
-- instance settles them under FOR UPDATE SKIP LOCKED of the model row),
-- decisions_step an episode's steps, decisions_time the listing's order.
-- models.decision_meta: the log's counts and last generated id.
CREATE TABLE decisions (
    mid BIGINT NOT NULL REFERENCES models (mid) ON DELETE CASCADE,
    id TEXT NOT NULL,
    episode TEXT,
    step BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    closes_ms BIGINT NOT NULL,
    state BYTEA NOT NULL,
    allowed BYTEA,
    action BIGINT NOT NULL,
    prob DOUBLE PRECISION NOT NULL,
    status BIGINT NOT NULL,
    acc DOUBLE PRECISION,
    rewards BIGINT NOT NULL,
    reward_ids BYTEA,
    learned DOUBLE PRECISION,
    applied_seq BIGINT,
    PRIMARY KEY (mid, id)
);

CREATE INDEX decisions_time ON decisions (mid, time_ms);
CREATE INDEX decisions_due ON decisions (closes_ms) WHERE status = 0;
CREATE INDEX decisions_step ON decisions (mid, episode, step) WHERE episode IS NOT NULL;

CREATE TABLE episodes (
    mid BIGINT NOT NULL REFERENCES models (mid) ON DELETE CASCADE,
    id TEXT NOT NULL,
    n_steps BIGINT NOT NULL,
    end_json TEXT,
    learned_return DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (mid, id)
);

ALTER TABLE models ADD COLUMN decision_meta BYTEA;
