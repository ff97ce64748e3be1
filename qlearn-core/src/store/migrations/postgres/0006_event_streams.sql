-- Event-stream tickets any instance can redeem once: the ticket's SHA-256
-- and the asking credential sealed with a key derived from the ticket
-- (the rows open nothing); `expires_at` on the database clock.
CREATE TABLE event_tickets (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX event_tickets_user ON event_tickets (user_id, expires_at);

-- Open event streams of every instance, for the per-user and per-model
-- caps: each a lease its instance renews while the stream runs; the rows
-- of an instance that died stop counting when their lease ends.
CREATE TABLE event_streams (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    instance TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX event_streams_user ON event_streams (user_id);
CREATE INDEX event_streams_model ON event_streams (model_id);
CREATE INDEX event_streams_instance ON event_streams (instance);
