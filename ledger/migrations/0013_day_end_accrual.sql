-- The day-end's accrual step for one chunk of loans, in one statement and one commit
-- (engine/eod/accrual.py calls it): every loan that accrues with an id after
-- `p_after_loan_id` and up to `p_through_loan_id`.
--
--   each loan: today's figure (interest_accrued_fen over its plan as it stands, plus the
--   interest its prepayments settled) minus what it has posted so far
--   ─► one posting for the chunk: Dr loan_interest_receivable of each loan with a
--      difference (a credit where a prepayment lowered the figure) / Cr interest_income
--   ─► a loan booked on the cash basis gets its unpaid charges posted once (opening):
--      Dr loan_penalty_receivable / Cr penalty_income
--   ─► loan_accrual and the checkpoint, in the same commit
--
-- The loans are locked FOR SHARE for the chunk's short transaction: a repayment that
-- settles one of them either commits first (then the loan is not `disbursed` any more
-- and is passed over) or waits for this commit (and then zeroes the receivable it
-- finds). Returns the last loan taken (0 if none), how many, and the fen posted.
-- (Within one statement: the ids of a chunk are read from the loan_disbursed index
-- beforehand, a page at a time; one settled meanwhile is passed over.)

CREATE OR REPLACE FUNCTION eod_accrue_chunk(
    p_business_date date, p_after_loan_id bigint, p_through_loan_id bigint,
    p_interest_txn_id bigint, p_opening_txn_id bigint, p_stripe integer
) RETURNS TABLE (last_loan_id bigint, loans integer, interest_fen bigint, opening_fen bigint)
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    customers bigint[];
    deltas bigint[];
    openings bigint[];
    interest_total bigint;
    opening_total bigint;
    taken integer;
    last_id bigint;
BEGIN
    SELECT array_agg(c.loan_id ORDER BY c.loan_id), array_agg(c.customer_id ORDER BY c.loan_id),
           array_agg(c.target - c.accrued ORDER BY c.loan_id),
           array_agg(c.opening ORDER BY c.loan_id), count(*), max(c.loan_id)
    INTO ids, customers, deltas, openings, taken, last_id
    FROM (SELECT l.loan_id, l.customer_id,
                 interest_accrued_fen(l.start_date, p.due_date, p.interest_fen, p_business_date)
                     + coalesce(a.interest_extra_fen, 0) AS target,
                 coalesce(a.interest_accrued_fen, 0) AS accrued,
                 coalesce(a.penalty_opening_fen, 0) AS opening
          FROM loan l
          JOIN loan_plan p ON p.loan_id = l.loan_id
          LEFT JOIN loan_accrual a ON a.loan_id = l.loan_id
          WHERE l.status = 'disbursed' AND l.loan_id > p_after_loan_id
            AND l.loan_id <= p_through_loan_id
          FOR SHARE OF l) c;
    IF taken = 0 THEN
        RETURN QUERY SELECT 0::bigint, 0, 0::bigint, 0::bigint;
        RETURN;
    END IF;

    INSERT INTO loan_accrual AS a (loan_id, customer_id, interest_accrued_fen)
    SELECT x.loan_id, x.customer_id, x.delta
    FROM unnest(ids, customers, deltas, openings) AS x(loan_id, customer_id, delta, opening)
    WHERE x.delta <> 0 OR x.opening <> 0
    ON CONFLICT (loan_id) DO UPDATE
    SET interest_accrued_fen = a.interest_accrued_fen + excluded.interest_accrued_fen,
        penalty_opening_fen = 0;

    SELECT coalesce(sum(d), 0) INTO interest_total FROM unnest(deltas) AS d;
    IF EXISTS (SELECT 1 FROM unnest(deltas) AS d WHERE d <> 0) THEN
        PERFORM ledger_post_many(
            ARRAY[p_interest_txn_id], ARRAY[NULL::bigint], ARRAY['interest_accrual'],
            ARRAY[NULL::bigint], p_business_date,
            legs.txn_ids, legs.codes, legs.owners, legs.customers, legs.amounts)
        FROM (SELECT array_agg(p_interest_txn_id ORDER BY l.n) AS txn_ids,
                     array_agg(l.code ORDER BY l.n) AS codes,
                     array_agg(l.owner_id ORDER BY l.n) AS owners,
                     array_agg(l.customer_id ORDER BY l.n) AS customers,
                     array_agg(l.amount_fen ORDER BY l.n) AS amounts
              FROM (SELECT x.n, 'loan_interest_receivable' AS code, x.loan_id AS owner_id,
                           x.customer_id, x.delta AS amount_fen
                    FROM unnest(ids, customers, deltas) WITH ORDINALITY
                         AS x(loan_id, customer_id, delta, n)
                    WHERE x.delta <> 0
                    UNION ALL
                    SELECT taken + 1, 'interest_income', p_stripe, NULL, -interest_total
                    WHERE interest_total <> 0) l) legs;
    END IF;

    SELECT coalesce(sum(o), 0) INTO opening_total FROM unnest(openings) AS o;
    IF opening_total > 0 THEN
        PERFORM ledger_post_many(
            ARRAY[p_opening_txn_id], ARRAY[NULL::bigint], ARRAY['penalty_opening'],
            ARRAY[NULL::bigint], p_business_date,
            legs.txn_ids, legs.codes, legs.owners, legs.customers, legs.amounts)
        FROM (SELECT array_agg(p_opening_txn_id ORDER BY l.n) AS txn_ids,
                     array_agg(l.code ORDER BY l.n) AS codes,
                     array_agg(l.owner_id ORDER BY l.n) AS owners,
                     array_agg(l.customer_id ORDER BY l.n) AS customers,
                     array_agg(l.amount_fen ORDER BY l.n) AS amounts
              FROM (SELECT x.n, 'loan_penalty_receivable' AS code, x.loan_id AS owner_id,
                           x.customer_id, x.opening AS amount_fen
                    FROM unnest(ids, customers, openings) WITH ORDINALITY
                         AS x(loan_id, customer_id, opening, n)
                    WHERE x.opening <> 0
                    UNION ALL
                    SELECT taken + 1, 'penalty_income', p_stripe, NULL, -opening_total) l) legs;
    END IF;

    RETURN QUERY SELECT last_id, taken, interest_total, opening_total;
END $$;
