-- Issue 20, second round: the booking functions' statements planned once per session.
--
-- PL/pgSQL caches each statement's plan, but with parameters PostgreSQL plans the first
-- five executions for their values ("custom" plans) and keeps doing so for as long as
-- the generic plan's estimated cost is above theirs. Every statement here reads its
-- rows through unnest() of array parameters: with the arrays' values known the planner
-- estimates their real length (1-32), without them 100 rows, so the generic plan always
-- looks dearer and each call was planned again, statement by statement. Measured on
-- the repayment bench (perf, PostgreSQL's samples): planning was 20 % of the shards'
-- CPU, 2 % with these settings, the plans the same (index lookups per array element;
-- none of these statements scans a table).
--
-- plan_cache_mode set on the function holds while it runs (and in what it calls:
-- ledger_post_many from complete_repayments, the deferred pair check at commit
-- excepted, which is already planned once). The day-end's own function keeps the
-- default: its chunks are large and few.

ALTER FUNCTION open_repayment_once SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION complete_repayments SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION book_drawdowns SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION record_request_nonces SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION complete_disbursements SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ledger_post_many SET plan_cache_mode = force_generic_plan;
