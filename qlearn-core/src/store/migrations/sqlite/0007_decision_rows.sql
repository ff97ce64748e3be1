-- Decisions a row each (issue 14): a decision call reads and writes only the
-- rows it touches (store/decision_rows.rs has the column formats). The logs
-- kept whole in decision_logs by version 3 are turned into rows when the
-- store opens (and their decision_logs rows deleted).
-- decisions: one row per logged decision; decisions_due finds the open
-- reward windows past their deadline, decisions_step an episode's steps,
-- decisions_time the listing's order.
-- episodes: its length, how it ended (JSON; NULL: going on) and the return
-- learned so far.
-- models.decision_meta: the log's counts and last generated id.
-- A model's rows are deleted in chunks after the model (no cascade: one
-- long transaction for a big log).
CREATE TABLE decisions (
    mid INTEGER NOT NULL,
    id TEXT NOT NULL,
    episode TEXT,
    step INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    closes_ms INTEGER NOT NULL,
    state BLOB NOT NULL,
    allowed BLOB,
    action INTEGER NOT NULL,
    prob REAL NOT NULL,
    status INTEGER NOT NULL,
    acc REAL,
    rewards INTEGER NOT NULL,
    reward_ids BLOB,
    learned REAL,
    applied_seq INTEGER,
    PRIMARY KEY (mid, id)
) WITHOUT ROWID;

CREATE INDEX decisions_time ON decisions (mid, time_ms);
CREATE INDEX decisions_due ON decisions (closes_ms) WHERE status = 0;
CREATE INDEX decisions_step ON decisions (mid, episode, step) WHERE episode IS NOT NULL;

CREATE TABLE episodes (
    mid INTEGER NOT NULL,
    id TEXT NOT NULL,
    n_steps INTEGER NOT NULL,
    end_json TEXT,
    learned_return REAL NOT NULL,
    PRIMARY KEY (mid, id)
) WITHOUT ROWID;

ALTER TABLE models ADD COLUMN decision_meta BLOB;
