-- Usage by kind of call, for invoicing (issue 17): usage_day gets one row
-- per user, UTC day and kind (predict, update, decide, reward); rows counted
-- before kinds existed keep their calls as kind 'unknown'. usage_month (the
-- row every debit of a user serialises on) also counts the month's calls
-- made past the quota on a tier with overage.
ALTER TABLE usage_day ADD COLUMN kind TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE usage_day ALTER COLUMN kind DROP DEFAULT;
ALTER TABLE usage_day DROP CONSTRAINT usage_day_pkey;
ALTER TABLE usage_day ADD PRIMARY KEY (user_id, month, day, kind);
ALTER TABLE usage_month ADD COLUMN overage BIGINT NOT NULL DEFAULT 0;
