-- qlearn SQLite schema, version 1.
-- Ids of users, models and keys are opaque random strings; `mid` is the
-- model's internal integer key (never shown to users).

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    email               TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    tier                TEXT NOT NULL,
    role                TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

-- A model: metadata, configuration (JSON) and learner state (see
-- store/encoding.rs); its Q-table rows are in q_rows.
CREATE TABLE models (
    mid        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    owner      TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    config     TEXT NOT NULL,
    learner    BLOB NOT NULL,
    returns    BLOB NOT NULL,
    n_rows     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX models_by_owner ON models (owner, created_at);

-- One row per stored state, numbered in insertion order (the table's page
-- order). key: encoded canonical state; vals: the row's f64 Q-values.
CREATE TABLE q_rows (
    mid    INTEGER NOT NULL,
    row_no INTEGER NOT NULL,
    key    BLOB NOT NULL,
    vals   BLOB NOT NULL,
    PRIMARY KEY (mid, row_no)
) WITHOUT ROWID;

-- Metered calls per user and UTC day; month is 'YYYY-MM', day 1..31.
CREATE TABLE usage (
    user_id TEXT NOT NULL REFERENCES users (id),
    month   TEXT NOT NULL,
    day     INTEGER NOT NULL,
    calls   INTEGER NOT NULL,
    PRIMARY KEY (user_id, month, day)
) WITHOUT ROWID;
