-- A loan's installment plan as one row of column arrays (`loan_plan`), not a row
-- per installment.
--
-- The plan is always read whole and written whole: booked with the drawdown,
-- replaced after each payment (engine/services/loan_store.py), never touched an
-- installment at a time. As rows, a 12-month drawdown wrote 12 heap tuples, 12
-- primary-key entries and made 12 foreign-key lookups into `loan`, and every
-- payment deleted and re-inserted them all: about 40 % of a drawdown's WAL records.
-- As one row it is one tuple, one key entry and one lookup, and a payment's
-- rewrite is one UPDATE, HOT when the page has room (no column it changes is
-- indexed; fillfactor 80 leaves about 1.6 KB per page, a 12-month plan is 0.85 KB).
--
-- The row's CHECK keeps what the rows' keys and CHECKs kept: arrays of one length,
-- one-dimensional from index 1; seq strictly increasing, so the arrays' order is the
-- installments' order and no seq repeats (the old primary key); no NULL but in
-- `accrued_through`; no negative amount; nothing paid beyond what is due.
-- `toast_tuple_target` keeps plans of up to about 8 KB (some 90 installments)
-- inline and uncompressed: compressing a 3 KB plan on every write costs more CPU
-- than the space it saves.
--
-- The view `installment` shows the plan as it was, a row per installment, for
-- readers (reports, audits, ad-hoc SQL); it is read-only.
--
-- Stop the engine and the relay before applying it: a process of the previous
-- version would write to `installment`, now a read-only view (a repayment's
-- completion fails there after the debit and is completed again by the new
-- version's relay, but nothing should rely on that). The locks below keep
-- anything that still runs from writing loans or plans while they are copied. On a
-- large shard the conversion rewrites every plan in this one transaction: for 4 M
-- loans, minutes and a table-sized WAL burst.

-- Fail fast rather than queue every reader and writer behind a long transaction (or
-- deadlock with one of a process left running): then stop it, and migrate again.
SET LOCAL lock_timeout = '5s';
LOCK TABLE loan IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE installment IN ACCESS EXCLUSIVE MODE;

-- The row's CHECK, as one function of the columns: PostgreSQL re-reads and re-plans a
-- CHECK's expression tree on every INSERT or UPDATE statement, which for the 40
-- conditions written inline cost more than evaluating them; a function call's tree
-- is small, and the function's own expressions are compiled once per session.
CREATE FUNCTION loan_plan_consistent(
    p_seq smallint[], p_due date[], p_principal bigint[], p_interest bigint[],
    p_balance_after bigint[], p_principal_paid bigint[], p_interest_paid bigint[],
    p_penalty_unpaid bigint[], p_compound_unpaid bigint[], p_accrued_through date[],
    p_penalty_paid bigint[]
) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n integer := cardinality(p_seq);
BEGIN
    IF NOT coalesce(
        -- every array one-dimensional from index 1 to n (array_dims: '[1:n]'), so that
        -- [i] means the i-th installment in all; an empty plan has no dimension at all
        (n = 0 OR array_dims(p_seq) = '[1:' || n || ']')
        AND array_dims(p_due) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_principal) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_interest) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_balance_after) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_principal_paid) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_interest_paid) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_penalty_unpaid) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_compound_unpaid) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_accrued_through) IS NOT DISTINCT FROM array_dims(p_seq)
        AND array_dims(p_penalty_paid) IS NOT DISTINCT FROM array_dims(p_seq)
        -- `x <= ALL` is NULL, not false, when an element is NULL: NULLs are ruled out first.
        AND array_position(p_seq, NULL) IS NULL AND array_position(p_due, NULL) IS NULL
        AND array_position(p_principal, NULL) IS NULL
        AND array_position(p_interest, NULL) IS NULL
        AND array_position(p_balance_after, NULL) IS NULL
        AND array_position(p_principal_paid, NULL) IS NULL
        AND array_position(p_interest_paid, NULL) IS NULL
        AND array_position(p_penalty_unpaid, NULL) IS NULL
        AND array_position(p_compound_unpaid, NULL) IS NULL
        AND array_position(p_penalty_paid, NULL) IS NULL
        AND 1 <= ALL (p_seq) AND 0 <= ALL (p_principal) AND 0 <= ALL (p_interest)
        AND 0 <= ALL (p_balance_after) AND 0 <= ALL (p_principal_paid)
        AND 0 <= ALL (p_interest_paid) AND 0 <= ALL (p_penalty_unpaid)
        AND 0 <= ALL (p_compound_unpaid) AND 0 <= ALL (p_penalty_paid), false) THEN
        RETURN false;
    END IF;
    FOR i IN 1 .. n LOOP  -- seq increasing; nothing paid beyond what is due
        IF (i > 1 AND p_seq[i] <= p_seq[i - 1])
           OR p_principal_paid[i] > p_principal[i] OR p_interest_paid[i] > p_interest[i] THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END $$;

CREATE TABLE loan_plan (
    loan_id             bigint PRIMARY KEY REFERENCES loan (loan_id),
    customer_id         bigint NOT NULL,
    -- One element per installment, in seq order; the names are installment's.
    seq                 smallint[] NOT NULL,
    due_date            date[] NOT NULL,
    principal_fen       bigint[] NOT NULL,
    interest_fen        bigint[] NOT NULL,
    balance_after_fen   bigint[] NOT NULL,
    principal_paid_fen  bigint[] NOT NULL,
    interest_paid_fen   bigint[] NOT NULL,
    penalty_unpaid_fen  bigint[] NOT NULL,
    compound_unpaid_fen bigint[] NOT NULL,
    accrued_through     date[] NOT NULL,
    penalty_paid_fen    bigint[] NOT NULL,
    CONSTRAINT loan_plan_consistent CHECK (loan_plan_consistent(seq, due_date, principal_fen,
        interest_fen, balance_after_fen, principal_paid_fen, interest_paid_fen,
        penalty_unpaid_fen, compound_unpaid_fen, accrued_through, penalty_paid_fen))
) WITH (toast_tuple_target = 8160, fillfactor = 80);

INSERT INTO loan_plan (loan_id, customer_id, seq, due_date, principal_fen, interest_fen,
    balance_after_fen, principal_paid_fen, interest_paid_fen, penalty_unpaid_fen,
    compound_unpaid_fen, accrued_through, penalty_paid_fen)
SELECT l.loan_id, l.customer_id,
    coalesce(array_agg(i.seq ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL), '{}'),
    coalesce(array_agg(i.due_date ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL), '{}'),
    coalesce(array_agg(i.principal_fen ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL), '{}'),
    coalesce(array_agg(i.interest_fen ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL), '{}'),
    coalesce(array_agg(i.balance_after_fen ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL),
             '{}'),
    coalesce(array_agg(i.principal_paid_fen ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL),
             '{}'),
    coalesce(array_agg(i.interest_paid_fen ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL),
             '{}'),
    coalesce(array_agg(i.penalty_unpaid_fen ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL),
             '{}'),
    coalesce(array_agg(i.compound_unpaid_fen ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL),
             '{}'),
    coalesce(array_agg(i.accrued_through ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL), '{}'),
    coalesce(array_agg(i.penalty_paid_fen ORDER BY i.seq) FILTER (WHERE i.seq IS NOT NULL), '{}')
FROM loan l LEFT JOIN installment i ON i.loan_id = l.loan_id
GROUP BY l.loan_id;

DROP TABLE installment;

CREATE VIEW installment AS
SELECT p.loan_id, i.seq, p.customer_id, i.due_date, i.principal_fen, i.interest_fen,
       i.balance_after_fen, i.principal_paid_fen, i.interest_paid_fen, i.penalty_unpaid_fen,
       i.compound_unpaid_fen, i.accrued_through, i.penalty_paid_fen
FROM loan_plan p
CROSS JOIN LATERAL unnest(p.seq, p.due_date, p.principal_fen, p.interest_fen,
    p.balance_after_fen, p.principal_paid_fen, p.interest_paid_fen, p.penalty_unpaid_fen,
    p.compound_unpaid_fen, p.accrued_through, p.penalty_paid_fen)
    AS i(seq, due_date, principal_fen, interest_fen, balance_after_fen, principal_paid_fen,
         interest_paid_fen, penalty_unpaid_fen, compound_unpaid_fen, accrued_through,
         penalty_paid_fen);

-- book_drawdown (0006) as it was, but for its plan: one loan_plan row.
CREATE OR REPLACE FUNCTION book_drawdown(
    p_idem_channel_id text, p_idem_key text, p_request_sha256 bytea, p_status_code smallint,
    p_response_body bytea,
    p_credit_line_id bigint, p_annual_rate_pct numeric, p_today date,
    p_cap_group text, p_cap_max_fen bigint,
    p_loan_id bigint, p_customer_id bigint, p_tenant_id text, p_channel_id text, p_product_code text,
    p_receipt_no text, p_principal_fen bigint, p_penalty_multiplier numeric,
    p_repayment_method text, p_term_months integer, p_grace_months integer, p_start_date date,
    p_maturity_date date, p_card_ciphertext bytea, p_card_masked text, p_payment_fen bigint,
    p_seq smallint[], p_due date[], p_principal bigint[], p_interest bigint[],
    p_balance_after bigint[], p_principal_paid bigint[], p_interest_paid bigint[],
    p_penalty_unpaid bigint[], p_compound_unpaid bigint[], p_accrued_through date[],
    p_penalty_paid bigint[],
    p_txn_id bigint, p_codes text[], p_owners bigint[], p_customers bigint[], p_amounts bigint[],
    p_outbox_id bigint, p_outbox_payload jsonb
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    line record;
    outstanding bigint;
BEGIN
    SELECT status, limit_fen - used_fen AS available_fen, annual_rate_pct, expires_on
    INTO line FROM credit_line WHERE credit_line_id = p_credit_line_id FOR UPDATE;
    IF NOT FOUND OR line.status <> 'active' OR line.expires_on < p_today
       OR line.annual_rate_pct <> p_annual_rate_pct OR line.available_fen < p_principal_fen THEN
        RETURN 'recheck';
    END IF;
    IF p_cap_max_fen IS NOT NULL THEN
        PERFORM 1 FROM customer WHERE customer_id = p_customer_id FOR UPDATE;
        SELECT coalesce(sum(outstanding_principal_fen), 0) INTO outstanding FROM loan
        WHERE customer_id = p_customer_id AND customer_cap_group = p_cap_group
          AND status IN ('disbursing', 'disbursed');
        IF outstanding + p_principal_fen > p_cap_max_fen THEN
            RETURN 'recheck';
        END IF;
    END IF;
    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_record
            (channel_id, idem_key, customer_id, request_sha256, status_code, response_body)
        VALUES (p_idem_channel_id, p_idem_key, p_customer_id, p_request_sha256, p_status_code,
                p_response_body)
        ON CONFLICT (channel_id, idem_key) DO NOTHING;
        IF NOT FOUND THEN
            RETURN 'replay';
        END IF;
    END IF;
    INSERT INTO loan (loan_id, customer_id, credit_line_id, tenant_id, channel_id, product_code,
        customer_cap_group, receipt_no, principal_fen, outstanding_principal_fen,
        annual_rate_pct, penalty_multiplier, repayment_method, term_months, grace_months,
        start_date, maturity_date, status, disburse_to_ciphertext, disburse_to_masked,
        payment_fen, requested_at, disbursed_at)
    VALUES (p_loan_id, p_customer_id, p_credit_line_id, p_tenant_id, p_channel_id,
        p_product_code, p_cap_group, p_receipt_no, p_principal_fen, p_principal_fen,
        p_annual_rate_pct, p_penalty_multiplier, p_repayment_method, p_term_months,
        p_grace_months, p_start_date, p_maturity_date, 'disbursing', p_card_ciphertext,
        p_card_masked, p_payment_fen, now(), NULL);
    INSERT INTO loan_plan (loan_id, customer_id, seq, due_date, principal_fen, interest_fen,
        balance_after_fen, principal_paid_fen, interest_paid_fen, penalty_unpaid_fen,
        compound_unpaid_fen, accrued_through, penalty_paid_fen)
    VALUES (p_loan_id, p_customer_id, p_seq, p_due, p_principal, p_interest, p_balance_after,
        p_principal_paid, p_interest_paid, p_penalty_unpaid, p_compound_unpaid,
        p_accrued_through, p_penalty_paid);
    UPDATE credit_line SET used_fen = used_fen + p_principal_fen, updated_at = now()
    WHERE credit_line_id = p_credit_line_id;
    PERFORM ledger_post(p_txn_id, p_customer_id, 'drawdown', p_loan_id, p_today,
                        p_codes, p_owners, p_customers, p_amounts);
    INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, amount_fen, payload)
    VALUES (p_outbox_id, p_customer_id, 'disburse', p_loan_id, p_principal_fen, p_outbox_payload);
    RETURN 'booked';
END $$;
