-- Accrued interest as a sub-ledger: the day-end posts a chunk's interest in one posting
-- of two legs, not one leg per loan, and locks the chunk's sub-ledger rows, not its loans
-- (issue 18).
--
-- Before: every day, every accruing loan got a leg on its own loan_interest_receivable
-- account, and that account's row was rewritten: 2 writes to the ledger per loan per
-- day (20 M legs a day for the union's book, 7 billion a year), and 60 % of a chunk's
-- time. Now, as a general ledger keeps a control account over its subsidiary ledger:
--
--   accrued_interest_receivable (internal, striped)   the control account: what the
--       day-end accrued (Dr, one posting per chunk: Dr it / Cr interest_income, the
--       chunk's net) less what repayments settled (Cr, in each repayment's posting)
--   loan_accrual.interest_accrued_fen                 per loan, accrued so far (as before)
--   loan_accrual.interest_settled_fen                 per loan, settled so far (new)
--
-- A loan's interest receivable is accrued - settled, and the control account's balance
-- is exactly their sum over the shard's loans: `python -m engine ledger trial-balance
-- --deep` checks it, as tests/books.py does after every test that moves money. A
-- repayment credits the control account with the interest it pays (a settled loan:
-- the whole receivable, as before) and adds it to the loan's interest_settled_fen.
--
-- The loans' own loan_interest_receivable accounts keep the legs booked before this
-- migration and are no longer posted to: their balances move to the control account
-- here (postings of 'interest_reclass', at most 10,000 loans each, with transaction ids
-- of the ID epoch's first millisecond, which no ID generator issues), and each loan's
-- interest_settled_fen is set so that accrued - settled is the balance it had.
--
-- Locks. 0013's chunk took FOR SHARE on each of its loans. A lock writes the row's
-- header: every day-end dirtied the whole loan table and logged it (81 bytes of WAL a
-- loan, 340 more the first time a page is touched after a checkpoint, when it goes to
-- the WAL whole), and an online repayment holding a loan (its phase A, for as long as
-- its inline debit) and the chunk waited for each other. The sub-ledger row is what
-- the chunk rewrites anyway, and what a repayment's completion writes:
--
--   every loan has its row from the moment it is booked (a statement trigger on loan:
--   one insert per booking statement, whatever its number of loans), so neither side
--   ever inserts one and races the other for it;
--   the chunk locks its loans' rows (FOR NO KEY UPDATE, in id order), then reads plans,
--   statuses and rows in a statement of its own: in READ COMMITTED a statement that
--   waited for a lock re-checks the locked row only and reads every other table as of
--   its start, before the holder committed;
--   a repayment's completion locks its loans, then their rows (in id order), then reads
--   the receivable: complete_repayments here (0018's, redefined), the locked path in
--   engine/services/repayments.py. Lock order everywhere: loans, sub-ledger rows,
--   ledger stripes; the chunk takes no loan lock.

SET LOCAL lock_timeout = '5s';

INSERT INTO ledger_chart (code, name_zh, kind, scope)
VALUES ('accrued_interest_receivable', '应收利息（计提汇总）', 'asset', 'internal')
ON CONFLICT (code) DO NOTHING;
INSERT INTO ledger_account (code, owner_id)
SELECT 'accrued_interest_receivable', stripe FROM generate_series(0, 63) AS stripe
ON CONFLICT DO NOTHING;

ALTER TABLE loan_accrual ADD COLUMN interest_settled_fen bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN loan_accrual.interest_accrued_fen IS
    'regular interest the day-end accrued so far (the sub-ledger of accrued_interest_receivable)';
COMMENT ON COLUMN loan_accrual.interest_settled_fen IS
    'interest repayments settled against it so far: the receivable is accrued - settled';

-- Each loan's receivable, as its own account held it.
UPDATE loan_accrual a SET interest_settled_fen = a.interest_accrued_fen
    - coalesce((SELECT r.debit_total_fen - r.credit_total_fen FROM ledger_account r
                WHERE r.code = 'loan_interest_receivable' AND r.owner_id = a.loan_id), 0);
INSERT INTO loan_accrual (loan_id, customer_id, interest_settled_fen)
SELECT r.owner_id, r.customer_id, r.credit_total_fen - r.debit_total_fen
FROM ledger_account r
WHERE r.code = 'loan_interest_receivable' AND r.debit_total_fen <> r.credit_total_fen
  AND NOT EXISTS (SELECT 1 FROM loan_accrual a WHERE a.loan_id = r.owner_id);

-- Their balances to the control account, 10,000 loans a posting.
DO $$
DECLARE
    txn bigint := 2300000;  -- ms 0 of the ID epoch (sharding/ids.py): never issued
    owners bigint[];
    customers bigint[];
    balances bigint[];
    total bigint;
BEGIN
    LOOP
        SELECT array_agg(r.owner_id ORDER BY r.owner_id),
               array_agg(r.customer_id ORDER BY r.owner_id),
               array_agg(r.credit_total_fen - r.debit_total_fen ORDER BY r.owner_id),
               sum(r.debit_total_fen - r.credit_total_fen)
        INTO owners, customers, balances, total
        FROM (SELECT owner_id, customer_id, debit_total_fen, credit_total_fen
              FROM ledger_account
              WHERE code = 'loan_interest_receivable' AND debit_total_fen <> credit_total_fen
              ORDER BY owner_id LIMIT 10000) r;
        EXIT WHEN owners IS NULL;
        IF total = 0 THEN  -- the loans' balances cancel out: their legs alone balance
            PERFORM ledger_post(txn, NULL, 'interest_reclass', NULL, current_date,
                array_fill('loan_interest_receivable'::text, ARRAY[cardinality(owners)]),
                owners, customers, balances);
        ELSE
            PERFORM ledger_post(txn, NULL, 'interest_reclass', NULL, current_date,
                array_fill('loan_interest_receivable'::text, ARRAY[cardinality(owners)])
                    || 'accrued_interest_receivable'::text,
                owners || (txn % 64), customers || NULL::bigint, balances || total);
        END IF;
        txn := txn + 1;
    END LOOP;
END $$;


-- Every loan's row of the sub-ledger, from its booking.
CREATE FUNCTION loan_accrual_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO loan_accrual (loan_id, customer_id)
    SELECT n.loan_id, n.customer_id FROM booked_loans n ORDER BY n.loan_id;
    RETURN NULL;
END $$;
CREATE TRIGGER loan_accrual_rows AFTER INSERT ON loan
    REFERENCING NEW TABLE AS booked_loans
    FOR EACH STATEMENT EXECUTE FUNCTION loan_accrual_rows();

INSERT INTO loan_accrual (loan_id, customer_id)
SELECT l.loan_id, l.customer_id FROM loan l ORDER BY l.loan_id
ON CONFLICT (loan_id) DO NOTHING;

COMMENT ON TABLE loan_accrual IS
    'per loan (every loan, from its booking): the accrual sub-ledger (ledger 0023)';

-- The day-end's accrual chunk (0013): into the sub-ledger, locking its rows, not the loans.
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
    locked bigint[];
BEGIN
    -- The chunk's rows of the sub-ledger locked, in a statement of their own, so that
    -- the read below takes its snapshot after the locks: a repayment that held one of
    -- them until just now is seen whole (plan, status, sub-ledger row as it left them).
    -- The loans themselves are not locked: not written, not logged, and an online
    -- request holding one is not waited for (only a repayment's completion locks the row).
    SELECT coalesce(array_agg(x.loan_id ORDER BY x.loan_id), '{}') INTO locked
    FROM (SELECT a.loan_id FROM loan_accrual a JOIN loan l ON l.loan_id = a.loan_id
          WHERE l.status = 'disbursed' AND a.loan_id > p_after_loan_id
            AND a.loan_id <= p_through_loan_id
          ORDER BY a.loan_id FOR NO KEY UPDATE OF a) x;
    SELECT array_agg(c.loan_id ORDER BY c.loan_id), array_agg(c.customer_id ORDER BY c.loan_id),
           array_agg(c.target - c.accrued ORDER BY c.loan_id),
           array_agg(c.opening ORDER BY c.loan_id), count(*), max(c.loan_id)
    INTO ids, customers, deltas, openings, taken, last_id
    FROM (SELECT l.loan_id, l.customer_id,
                 interest_accrued_fen(l.start_date, p.due_date, p.interest_fen, p_business_date)
                     + a.interest_extra_fen AS target,
                 a.interest_accrued_fen AS accrued, a.penalty_opening_fen AS opening
          FROM loan l
          JOIN loan_plan p ON p.loan_id = l.loan_id
          JOIN loan_accrual a ON a.loan_id = l.loan_id
          WHERE l.loan_id = ANY (locked) AND l.status = 'disbursed') c;
    IF taken = 0 THEN
        RETURN QUERY SELECT 0::bigint, 0, 0::bigint, 0::bigint;
        RETURN;
    END IF;

    SELECT coalesce(sum(d), 0) INTO interest_total FROM unnest(deltas) AS d;
    UPDATE loan_accrual a SET interest_accrued_fen = a.interest_accrued_fen + x.delta,
        penalty_opening_fen = 0
    FROM unnest(ids, deltas, openings) AS x(loan_id, delta, opening)
    WHERE a.loan_id = x.loan_id AND (x.delta <> 0 OR x.opening <> 0);

    IF interest_total <> 0 THEN  -- the chunk's net: a credit where prepayments lowered it
        PERFORM ledger_post(p_interest_txn_id, NULL, 'interest_accrual', NULL, p_business_date,
            ARRAY['accrued_interest_receivable', 'interest_income'], ARRAY[p_stripe, p_stripe]::bigint[],
            ARRAY[NULL, NULL]::bigint[], ARRAY[interest_total, -interest_total]);
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

-- Group completion of repayments (0018): against the sub-ledger, whose rows it locks
-- after the loans.
CREATE OR REPLACE FUNCTION complete_repayments(
    p_repayment_id bigint[], p_customer_id bigint[], p_business_date date,
    -- the debit's outbox row (closed under its claim) and core's reference
    p_outbox_id bigint[], p_outbox_attempts integer[], p_outcome text[],
    -- the idempotency record's answer, and the merged SMS
    p_idem_channel_id text[], p_idem_key text[], p_response_body bytea[],
    p_sms_outbox_id bigint[], p_sms_payload jsonb[],
    -- per loan: what was read, then what changes
    p_loan_r integer[], p_loan_id bigint[], p_loan_xmin text[], p_plan_xmin text[],
    p_interest_recv bigint[], p_penalty_recv bigint[],
    p_line_id bigint[], p_principal_fen bigint[], p_payment_fen bigint[], p_prepaid_fen bigint[],
    p_plan_bump integer[], p_settled boolean[],
    p_seq text[], p_due text[], p_principal text[], p_interest text[], p_balance_after text[],
    p_principal_paid text[], p_interest_paid text[], p_penalty_unpaid text[],
    p_compound_unpaid text[], p_accrued_through text[], p_penalty_paid text[],
    p_mode text[], p_prepay_rule text[], p_amount_fen bigint[], p_penalty_fen bigint[],
    p_interest_fen bigint[], p_interest_extra_fen bigint[],
    -- the postings
    p_txn_id bigint[], p_leg_txn_ids bigint[], p_codes text[], p_owners bigint[],
    p_customers bigint[], p_amounts bigint[],
    p_lock_timeout text
) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_repayment_id);
    loans integer := cardinality(p_loan_id);
    answer text[] := array_fill('booked'::text, ARRAY[n]);
    refused integer[];
    booked_txns bigint[];
BEGIN
    IF p_lock_timeout IS NOT NULL THEN  -- to the end of the caller's transaction
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(ARRAY[
            cardinality(p_customer_id), cardinality(p_outbox_id), cardinality(p_outbox_attempts),
            cardinality(p_outcome), cardinality(p_idem_channel_id), cardinality(p_idem_key),
            cardinality(p_response_body), cardinality(p_sms_outbox_id),
            cardinality(p_sms_payload), cardinality(p_txn_id)]) AS c(len)
            WHERE c.len IS DISTINCT FROM n)
       OR EXISTS (SELECT 1 FROM unnest(ARRAY[
            cardinality(p_loan_r), cardinality(p_loan_xmin), cardinality(p_plan_xmin),
            cardinality(p_interest_recv), cardinality(p_penalty_recv), cardinality(p_line_id),
            cardinality(p_principal_fen), cardinality(p_payment_fen), cardinality(p_prepaid_fen),
            cardinality(p_plan_bump), cardinality(p_settled), cardinality(p_seq),
            cardinality(p_due), cardinality(p_principal), cardinality(p_interest),
            cardinality(p_balance_after), cardinality(p_principal_paid),
            cardinality(p_interest_paid), cardinality(p_penalty_unpaid),
            cardinality(p_compound_unpaid), cardinality(p_accrued_through),
            cardinality(p_penalty_paid), cardinality(p_mode), cardinality(p_prepay_rule),
            cardinality(p_amount_fen), cardinality(p_penalty_fen), cardinality(p_interest_fen),
            cardinality(p_interest_extra_fen)]) AS c(len) WHERE c.len IS DISTINCT FROM loans)
       OR EXISTS (SELECT 1 FROM unnest(p_loan_r) AS l(r) WHERE l.r NOT BETWEEN 1 AND n)
       OR p_business_date IS NULL
       OR cardinality(p_codes) IS DISTINCT FROM cardinality(p_leg_txn_ids)
       OR cardinality(p_owners) IS DISTINCT FROM cardinality(p_leg_txn_ids)
       OR cardinality(p_customers) IS DISTINCT FROM cardinality(p_leg_txn_ids)
       OR cardinality(p_amounts) IS DISTINCT FROM cardinality(p_leg_txn_ids) THEN
        RAISE EXCEPTION 'complete_repayments: arrays of unequal length' USING ERRCODE = '22023';
    END IF;

    -- The repayments, locked in id order: only one still `processing` on the date read.
    SELECT coalesce(array_agg(i.r), '{}') INTO refused
    FROM unnest(p_repayment_id) WITH ORDINALITY AS i(repayment_id, r)
    LEFT JOIN (SELECT repayment_id, status, business_date FROM repayment
               WHERE repayment_id = ANY (p_repayment_id)
               ORDER BY repayment_id FOR UPDATE) x ON x.repayment_id = i.repayment_id
    WHERE x.repayment_id IS NULL OR x.status <> 'processing'
       OR x.business_date <> p_business_date
       OR (SELECT count(*) FROM unnest(p_repayment_id) AS t(id) WHERE t.id = i.repayment_id) > 1;
    FOR k IN 1 .. cardinality(refused) LOOP
        answer[refused[k]] := 'recheck';
    END LOOP;

    -- The loans and their plans locked in id order, in a statement of their own, so that
    -- the comparison below reads with a snapshot taken after the locks (an accrual chunk
    -- that held a row until just now is seen); then they must be as they were read:
    -- the same row versions (xmin), held by this repayment, and the same receivables.
    PERFORM 1 FROM loan JOIN loan_plan p ON p.loan_id = loan.loan_id
    WHERE loan.loan_id = ANY (p_loan_id)
    ORDER BY loan.loan_id FOR UPDATE OF loan, p;
    -- Their rows of the sub-ledger next: the day-end's accrual locks those, not the
    -- loans, and a chunk holding one is waited for here.
    PERFORM 1 FROM loan_accrual a WHERE a.loan_id = ANY (p_loan_id)
    ORDER BY a.loan_id FOR NO KEY UPDATE;
    SELECT coalesce(array_agg(DISTINCT i.r), '{}') INTO refused
    FROM unnest(p_loan_r, p_loan_id, p_loan_xmin, p_plan_xmin, p_interest_recv, p_penalty_recv)
         AS i(r, loan_id, loan_xmin, plan_xmin, interest_recv, penalty_recv)
    LEFT JOIN (SELECT loan.loan_id, loan.xmin::text AS loan_xmin, p.xmin::text AS plan_xmin,
                      loan.pending_repayment_id, loan.status
               FROM loan JOIN loan_plan p ON p.loan_id = loan.loan_id
               WHERE loan.loan_id = ANY (p_loan_id)
               ORDER BY loan.loan_id FOR UPDATE OF loan, p) l ON l.loan_id = i.loan_id
    WHERE l.loan_id IS NULL OR l.loan_xmin <> i.loan_xmin OR l.plan_xmin <> i.plan_xmin
       OR l.status <> 'disbursed' OR l.pending_repayment_id IS DISTINCT FROM p_repayment_id[i.r]
       OR i.interest_recv <> coalesce((SELECT a.interest_accrued_fen - a.interest_settled_fen
                                       FROM loan_accrual a WHERE a.loan_id = i.loan_id), 0)
       OR i.penalty_recv <> coalesce((SELECT a.debit_total_fen - a.credit_total_fen
                                      FROM ledger_account a
                                      WHERE a.code = 'loan_penalty_receivable'
                                        AND a.owner_id = i.loan_id), 0);
    FOR k IN 1 .. cardinality(refused) LOOP
        answer[refused[k]] := 'recheck';
    END LOOP;

    SELECT array_agg(t.txn_id ORDER BY t.r) INTO booked_txns
    FROM unnest(p_txn_id) WITH ORDINALITY AS t(txn_id, r) WHERE answer[t.r] = 'booked';
    IF booked_txns IS NULL THEN
        RETURN answer;
    END IF;

    UPDATE loan_plan p SET seq = x.seq::smallint[], due_date = x.due::date[],
        principal_fen = x.principal::bigint[], interest_fen = x.interest::bigint[],
        balance_after_fen = x.balance_after::bigint[],
        principal_paid_fen = x.principal_paid::bigint[],
        interest_paid_fen = x.interest_paid::bigint[],
        penalty_unpaid_fen = x.penalty_unpaid::bigint[],
        compound_unpaid_fen = x.compound_unpaid::bigint[],
        accrued_through = x.accrued_through::date[], penalty_paid_fen = x.penalty_paid::bigint[]
    FROM unnest(p_loan_r, p_loan_id, p_seq, p_due, p_principal, p_interest, p_balance_after,
                p_principal_paid, p_interest_paid, p_penalty_unpaid, p_compound_unpaid,
                p_accrued_through, p_penalty_paid)
         AS x(r, loan_id, seq, due, principal, interest, balance_after, principal_paid,
              interest_paid, penalty_unpaid, compound_unpaid, accrued_through, penalty_paid)
    WHERE p.loan_id = x.loan_id AND answer[x.r] = 'booked';

    -- The loans: paid down, plan as now, held no longer.
    UPDATE loan SET outstanding_principal_fen = outstanding_principal_fen - x.principal,
        payment_fen = x.payment, prepaid_fen = x.prepaid, plan_version = plan_version + x.bump,
        status = CASE WHEN x.settled THEN 'settled' ELSE status END,
        settled_at = CASE WHEN x.settled THEN now() ELSE settled_at END,
        pending_repayment_id = NULL, updated_at = now()
    FROM unnest(p_loan_r, p_loan_id, p_principal_fen, p_payment_fen, p_prepaid_fen, p_plan_bump,
                p_settled) AS x(r, loan_id, principal, payment, prepaid, bump, settled)
    WHERE loan.loan_id = x.loan_id AND answer[x.r] = 'booked';

    -- The lines (revolving), in id order, each once.
    UPDATE credit_line l SET used_fen = l.used_fen - x.principal, updated_at = now()
    FROM (SELECT u.line_id, sum(u.principal) AS principal
          FROM unnest(p_loan_r, p_line_id, p_principal_fen) AS u(r, line_id, principal)
          WHERE answer[u.r] = 'booked'
          GROUP BY u.line_id ORDER BY u.line_id) x
    WHERE l.credit_line_id = x.line_id;

    -- The sub-ledger: interest settled (what was paid; a settled loan's whole receivable,
    -- as read and compared above), and interest prepayments settled on the prepaid
    -- principal, earned now (ledger.accrual).
    INSERT INTO loan_accrual AS a (loan_id, customer_id, interest_extra_fen, interest_settled_fen)
    SELECT x.loan_id, p_customer_id[x.r], x.extra,
           CASE WHEN x.settled THEN x.recv ELSE x.interest END
    FROM unnest(p_loan_r, p_loan_id, p_interest_extra_fen, p_settled, p_interest_recv,
                p_interest_fen) AS x(r, loan_id, extra, settled, recv, interest)
    WHERE answer[x.r] = 'booked'
      AND (x.extra > 0 OR CASE WHEN x.settled THEN x.recv ELSE x.interest END <> 0)
    ORDER BY x.loan_id
    ON CONFLICT (loan_id) DO UPDATE
    SET interest_extra_fen = a.interest_extra_fen + excluded.interest_extra_fen,
        interest_settled_fen = a.interest_settled_fen + excluded.interest_settled_fen;

    INSERT INTO repayment_item (repayment_id, loan_id, customer_id, mode, prepay_rule,
        amount_fen, penalty_fen, interest_fen, principal_fen)
    SELECT p_repayment_id[x.r], x.loan_id, p_customer_id[x.r], x.mode, x.rule, x.amount,
        x.penalty, x.interest, x.principal
    FROM unnest(p_loan_r, p_loan_id, p_mode, p_prepay_rule, p_amount_fen, p_penalty_fen,
                p_interest_fen, p_principal_fen) WITH ORDINALITY
         AS x(r, loan_id, mode, rule, amount, penalty, interest, principal, n)
    WHERE answer[x.r] = 'booked'
    ORDER BY x.n;

    UPDATE repayment r SET status = 'succeeded', completed_at = now()
    FROM unnest(p_repayment_id) WITH ORDINALITY AS x(repayment_id, r)
    WHERE r.repayment_id = x.repayment_id AND answer[x.r] = 'booked';

    INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, payload)
    SELECT x.outbox_id, x.customer_id, 'sms', x.repayment_id, x.payload
    FROM unnest(p_sms_outbox_id, p_customer_id, p_repayment_id, p_sms_payload) WITH ORDINALITY
         AS x(outbox_id, customer_id, repayment_id, payload, r)
    WHERE answer[x.r] = 'booked';

    UPDATE idempotency_record i SET response_body = x.body
    FROM unnest(p_idem_channel_id, p_idem_key, p_response_body) WITH ORDINALITY
         AS x(channel_id, idem_key, body, r)
    WHERE i.channel_id = x.channel_id AND i.idem_key = x.idem_key AND answer[x.r] = 'booked';

    -- The debit's row, only under the claim that was handed out (as `outbox.finish`).
    UPDATE outbox o SET state = 'done', outcome = x.outcome, done_at = now(), lease_until = NULL
    FROM unnest(p_outbox_id, p_outbox_attempts, p_outcome) WITH ORDINALITY
         AS x(outbox_id, attempts, outcome, r)
    WHERE o.outbox_id = x.outbox_id AND o.attempts = x.attempts
      AND o.state IN ('sending', 'unknown') AND answer[x.r] = 'booked';

    PERFORM ledger_post_many(
        booked_txns,
        (SELECT array_agg(x.customer_id ORDER BY x.r)
         FROM unnest(p_customer_id) WITH ORDINALITY AS x(customer_id, r)
         WHERE answer[x.r] = 'booked'),
        array_fill('repayment'::text, ARRAY[cardinality(booked_txns)]),
        (SELECT array_agg(x.repayment_id ORDER BY x.r)
         FROM unnest(p_repayment_id) WITH ORDINALITY AS x(repayment_id, r)
         WHERE answer[x.r] = 'booked'),
        p_business_date,
        legs.txn_ids, legs.codes, legs.owners, legs.customers, legs.amounts)
    FROM (SELECT array_agg(l.txn_id ORDER BY l.n) AS txn_ids,
                 array_agg(l.code ORDER BY l.n) AS codes,
                 array_agg(l.owner_id ORDER BY l.n) AS owners,
                 array_agg(l.customer_id ORDER BY l.n) AS customers,
                 array_agg(l.amount_fen ORDER BY l.n) AS amounts
          FROM unnest(p_leg_txn_ids, p_codes, p_owners, p_customers, p_amounts) WITH ORDINALITY
               AS l(txn_id, code, owner_id, customer_id, amount_fen, n)
          WHERE l.txn_id = ANY (booked_txns)) legs;
    RETURN answer;
END $$;

ALTER FUNCTION complete_repayments SET plan_cache_mode = force_generic_plan;  -- as 0021
