-- Whole-table writes in chunks (issue 11). A model's Q-rows live under its
-- table number: models.tab, or the model's own mid when NULL (every model
-- made before this migration). A reshape writes the new rows under a fresh
-- number in short transactions between other tenants' commits, then points
-- models.tab at them in one small transaction; an import writes its rows
-- before its model row exists; a deleted or replaced table is deleted in
-- short transactions afterwards. loose_tables lists the table numbers that
-- no model uses while they are being written or deleted: their rows are
-- never served, and whatever is listed when the store opens is deleted.
ALTER TABLE models ADD COLUMN tab INTEGER;

CREATE TABLE loose_tables (
    tab INTEGER PRIMARY KEY
);
