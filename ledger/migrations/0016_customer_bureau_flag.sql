-- A drawdown rechecks the customer's standing: the black list (blacklist_entry, by ID
-- number) and this flag, set by the day-end's post-loan bureau check or an import
-- (`python -m engine bureauflag import`); NULL: none.
ALTER TABLE customer ADD COLUMN bureau_flag text CHECK (char_length(bureau_flag) <= 64);
ALTER TABLE customer ADD COLUMN bureau_flagged_at timestamptz;
