-- Outbox claims as HOT updates.
--
-- A claim (pending -> sending: lease, attempts, send time) changed `state`, which the
-- ready index's predicate names, so every claim wrote its new version on another page
-- and a new entry in every index: 0 % of the outbox's updates were HOT, and a
-- drawdown's two rows (its payment, then its SMS) cost about twelve index entries
-- instead of six. The ready index now names `done_at`, which only the final answer
-- sets (one constraint ties the two), and pages keep room for a claim's new version.
--
-- On a large outbox: the constraint is NOT VALID (rows already there were made final
-- with their done_at by every path that finishes one; checking them would scan the
-- table under its lock), and the index can be built beforehand with
-- `CREATE INDEX CONCURRENTLY outbox_ready_open ...`, which this then finds.

ALTER TABLE outbox ADD CONSTRAINT outbox_done_at_when_final
    CHECK ((done_at IS NOT NULL) = (state IN ('done', 'failed'))) NOT VALID;
CREATE INDEX IF NOT EXISTS outbox_ready_open ON outbox (next_attempt_at) WHERE done_at IS NULL;
DROP INDEX outbox_ready;
ALTER INDEX outbox_ready_open RENAME TO outbox_ready;
ALTER TABLE outbox SET (fillfactor = 70);
