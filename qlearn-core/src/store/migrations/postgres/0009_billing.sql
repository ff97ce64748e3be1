-- Billing (issue 17): the provider's event ids applied (idempotency and
-- replay protection), and each user's billing record: the provider's
-- customer id, a downgrade scheduled for the end of a paid period, and the
-- creation time of the newest event applied.
CREATE TABLE billing_events (
    id TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
CREATE TABLE billing_accounts (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    customer_id TEXT UNIQUE,
    pending_tier TEXT,
    pending_at BIGINT,
    last_event_at BIGINT NOT NULL
);
CREATE INDEX billing_accounts_pending ON billing_accounts (pending_at)
    WHERE pending_at IS NOT NULL;
