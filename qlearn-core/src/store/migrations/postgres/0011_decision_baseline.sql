-- The baseline action recorded with a decision (what the customer's
-- existing rule would have chosen), for offline evaluation's `baseline`
-- policy; NULL when the decision was logged without one.
ALTER TABLE decisions ADD COLUMN baseline BIGINT;
