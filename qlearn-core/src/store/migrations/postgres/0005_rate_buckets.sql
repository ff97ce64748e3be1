-- Token buckets shared by every instance of one database: per-second API
-- limits (leased), failed-login, registration and whole-model throttles.
-- `key` is a SHA-256 (no email or address is stored); `tokens` as of `at`
-- (the database clock, Unix seconds); `granted` what the last take got.
CREATE TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    rate DOUBLE PRECISION NOT NULL,
    burst DOUBLE PRECISION NOT NULL,
    granted DOUBLE PRECISION NOT NULL
);
