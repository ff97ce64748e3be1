-- Usage by kind of call, for invoicing (issue 17): one row per user, UTC
-- day and kind (predict, update, decide, reward), with the calls of it
-- made past the monthly quota on a tier with overage. Rows counted before
-- kinds existed keep their calls as kind 'unknown', overage 0.
CREATE TABLE usage_by_kind (
    user_id TEXT NOT NULL REFERENCES users (id),
    month   TEXT NOT NULL,
    day     INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    calls   INTEGER NOT NULL,
    overage INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, month, day, kind)
) WITHOUT ROWID;

INSERT INTO usage_by_kind (user_id, month, day, kind, calls, overage)
    SELECT user_id, month, day, 'unknown', calls, 0 FROM usage;

DROP TABLE usage;

ALTER TABLE usage_by_kind RENAME TO usage;
