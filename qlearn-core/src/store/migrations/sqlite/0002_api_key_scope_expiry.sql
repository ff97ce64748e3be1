-- API keys gain a scope and an optional expiry (issue 11). Keys created
-- before this migration carried every right; they become `full` (everything
-- but admin actions): an admin who wants an admin key creates a new one.
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'full'
    CHECK (scope IN ('read', 'engine', 'full', 'admin'));
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
