-- Issue 18: the day-end's outbox rows in a lane of their own.
--
-- On a date with installments due, the relay's work on the day's auto-debits (the
-- debits, their completions, their merged SMS) held the CPU the online requests
-- needed: with the relay at nice 0 the online p99 during the deduction was 2.6-5.1 s,
-- at nice 19 0.4-1.0 s (BENCHMARKS.md, issue 18's sixth round). But the same relay
-- carries the online money (disbursements, the bureau step), which should not wait.
-- So the day-end's rows are claimed by a relay of their own (`engine relay --lane
-- batch`, at the day-end's priority), the rest by the online one (`--lane online`);
-- `engine relay` alone takes both, as before.
--
-- A row's lane is its writer's session's `engine.outbox_lane` (a start-up parameter:
-- the day-end's shard connections and the batch relay's pools set `batch`), so the
-- rows written inside SQL functions (open_repayments, the completions' SMS) follow
-- without a change to any writer. Two steps, so that neither rewrites nor scans the
-- table under its lock: the column with a constant default (existing rows read it
-- from the catalogue), then the session's default for new rows; the check is NOT
-- VALID for the same reason (every existing row is 'online').
ALTER TABLE outbox ADD COLUMN lane text NOT NULL DEFAULT 'online';
ALTER TABLE outbox ALTER COLUMN lane
    SET DEFAULT coalesce(nullif(current_setting('engine.outbox_lane', true), ''), 'online');
ALTER TABLE outbox ADD CONSTRAINT outbox_lane_known CHECK (lane IN ('online', 'batch')) NOT VALID;

-- Each relay's claim reads its lane's ready rows in order from the index (a day's
-- reminders are tens of thousands of batch rows the online relay must not step over).
-- On a large outbox it can be built beforehand with `CREATE INDEX CONCURRENTLY
-- outbox_ready_lane ...`, which this then finds (as migration 0008's). The lane never
-- changes, so a claim stays a HOT update.
CREATE INDEX IF NOT EXISTS outbox_ready_lane ON outbox (lane, next_attempt_at)
    WHERE done_at IS NULL;
DROP INDEX outbox_ready;
ALTER INDEX outbox_ready_lane RENAME TO outbox_ready;
