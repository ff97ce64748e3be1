-- The open decisions keyed by model, then deadline (issue 16's list: the
-- due read). `decisions_due` held (closes_ms) alone, so a model's due read
-- (`SQL_DUE`, postgres/decisions.rs) could only filter every model's due
-- decisions by model: a settle pass cost the models with due decisions
-- times all due decisions, quadratic in the active logging models, and
-- worst after an outage. Keyed (mid, closes_ms), a model's due read is one
-- index range, and the pass finds the models with due decisions by one
-- seek per model with an open decision (`SQL_DUE_MODELS`). The index
-- replaces the old one, still partial (open decisions only): a logging
-- predict writes no more than before, and the planner has no other index
-- of open decisions to prefer.
DROP INDEX decisions_due;
CREATE INDEX decisions_due ON decisions (mid, closes_ms) WHERE status = 0;
