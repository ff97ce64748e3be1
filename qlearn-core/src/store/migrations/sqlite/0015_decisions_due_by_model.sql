-- The open decisions keyed by model, then deadline (issue 16's list: the
-- due read). `decisions_due` held (closes_ms) alone, so a model's due read
-- (`decision_rows::sql_due`) went over every model's due decisions to keep
-- its own: a settle pass cost the models with due decisions times all due
-- decisions, quadratic in the active logging models, and worst after an
-- outage. Keyed (mid, closes_ms), a model's due read is one range of its
-- own rows, and the pass finds the models with due decisions by one seek
-- per model with an open decision (`decisions::SQL_DUE_MODELS`). The index
-- replaces the old one, still partial (open decisions only): a logging
-- predict writes no more than before. (Keeping both, for a pass that costs
-- only the due decisions, cost the logging predict 1.7-3.6% in req/s.)
DROP INDEX decisions_due;
CREATE INDEX decisions_due ON decisions (mid, closes_ms) WHERE status = 0;
