-- qlearn PostgreSQL schema, version 1.
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
    created_at          BIGINT NOT NULL,
    password_changed_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

-- A model: metadata, configuration (JSON) and learner state (see
-- store/encoding.rs). Updates lock this row (SELECT ... FOR UPDATE), which
-- serialises them across every server instance.
CREATE TABLE models (
    mid        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    owner      TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    config     TEXT NOT NULL,
    learner    BYTEA NOT NULL,
    returns    BYTEA NOT NULL,
    n_rows     BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX models_by_owner ON models (owner, created_at);

-- One row per stored state, numbered in insertion order (the page order),
-- found by its encoded key.
CREATE TABLE q_rows (
    mid    BIGINT NOT NULL REFERENCES models (mid) ON DELETE CASCADE,
    row_no BIGINT NOT NULL,
    key    BYTEA NOT NULL,
    vals   BYTEA NOT NULL,
    PRIMARY KEY (mid, row_no)
);
CREATE UNIQUE INDEX q_rows_by_key ON q_rows (mid, key);

-- Metered calls: the month's total (debited by one conditional upsert, the
-- quota check) and the per-day breakdown. month is 'YYYY-MM'.
CREATE TABLE usage_month (
    user_id TEXT NOT NULL REFERENCES users (id),
    month   TEXT NOT NULL,
    calls   BIGINT NOT NULL,
    PRIMARY KEY (user_id, month)
);

CREATE TABLE usage_day (
    user_id TEXT NOT NULL REFERENCES users (id),
    month   TEXT NOT NULL,
    day     SMALLINT NOT NULL,
    calls   BIGINT NOT NULL,
    PRIMARY KEY (user_id, month, day)
);
