-- Issue 18: no planner statistics for columns that are read whole and never searched.
--
-- Autovacuum's ANALYZE samples 30,000 rows of a table every time a tenth of it has
-- changed, and builds statistics for every column. For an array column it also builds
-- element statistics (the most common elements and a histogram of distinct counts) over
-- every element of every sampled row: the plan's eleven arrays of 12-36 elements made
-- one ANALYZE of loan_plan cost 1.3-1.7 s of CPU on a 118,000-row shard, and the
-- online traffic and the day-end's deductions change a tenth of the plans every few
-- minutes. On this 2-core machine a burst of a whole core for over a second is what
-- the online p99 showed, with or without the day-end (measured with
-- log_autovacuum_min_duration = 0 during a governed day-end: ANALYZE was 11 of the
-- 12 s of CPU autovacuum spent, loan_plan the largest).
--
-- No statement filters, joins or sorts on these columns: the plan's arrays, a
-- payload, a stored response, a ciphertext are read by their row's key. A statistics
-- target of 0 leaves them out of ANALYZE (ALTER TABLE ... SET STATISTICS); the
-- planner then uses its defaults for them, which nothing asks for. Measured with
-- `\timing` on ANALYZE, shard_0 of the bench book: loan_plan 1,338 -> 262 ms,
-- repayment 577 -> 220 ms, outbox 465 -> 289 ms, idempotency_record 266 -> 214 ms.
-- The columns that are searched keep theirs: loan_plan.next_due_date (the day-end's
-- due scan), outbox.next_attempt_at and state, every key.

ALTER TABLE loan_plan
    ALTER COLUMN seq SET STATISTICS 0,
    ALTER COLUMN due_date SET STATISTICS 0,
    ALTER COLUMN principal_fen SET STATISTICS 0,
    ALTER COLUMN interest_fen SET STATISTICS 0,
    ALTER COLUMN balance_after_fen SET STATISTICS 0,
    ALTER COLUMN principal_paid_fen SET STATISTICS 0,
    ALTER COLUMN interest_paid_fen SET STATISTICS 0,
    ALTER COLUMN penalty_unpaid_fen SET STATISTICS 0,
    ALTER COLUMN compound_unpaid_fen SET STATISTICS 0,
    ALTER COLUMN accrued_through SET STATISTICS 0,
    ALTER COLUMN penalty_paid_fen SET STATISTICS 0;

ALTER TABLE outbox
    ALTER COLUMN payload SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0;

ALTER TABLE repayment
    ALTER COLUMN request_items SET STATISTICS 0,
    ALTER COLUMN debit_from_ciphertext SET STATISTICS 0;

ALTER TABLE idempotency_record
    ALTER COLUMN response_body SET STATISTICS 0,
    ALTER COLUMN request_sha256 SET STATISTICS 0;

ALTER TABLE loan
    ALTER COLUMN disburse_to_ciphertext SET STATISTICS 0;
