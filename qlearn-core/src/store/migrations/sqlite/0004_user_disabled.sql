-- Operators can disable a user (issue 12): a disabled user cannot log in and
-- its tokens and API keys stop authenticating; its data is kept.
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
