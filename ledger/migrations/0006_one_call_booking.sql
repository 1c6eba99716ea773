-- Booking in one round trip: a drawdown (and a posting on its own) is one call.
--
-- ledger_post_many  whole postings: the transaction rows, their legs, and the running
--                   totals of every account they touch (upserted, locked in
--                   (code, owner_id) order so two callers never deadlock). Every
--                   posting goes through it: ledger_post (ledger/store.py) is one.
-- book_drawdown   the writes of a drawdown, after checking under the line's lock
--                 (and the customer's, for a capped product) that what the caller
--                 read before planning still holds. Returns
--                   'booked'  everything written;
--                   'replay'  the idempotency record exists (nothing written);
--                   'recheck' the line or the customer's cap changed since the
--                             caller's read (nothing written): the caller redoes
--                             the drawdown under locks and finds out why.
--                 Run as its own statement it is its own transaction: one round
--                 trip and one commit for the whole drawdown. Inside a transaction
--                 that already holds the locks it just writes (p_idem_key NULL: the
--                 caller stores the idempotency record itself).
--
-- PL/pgSQL, not SQL functions: their statements' plans are cached per session.

CREATE FUNCTION ledger_post_many(
    p_txn_ids bigint[], p_customer_ids bigint[], p_kinds text[], p_ref_ids bigint[],
    p_business_date date,
    -- every posting's legs, each naming its transaction, in order
    p_leg_txn_ids bigint[], p_codes text[], p_owners bigint[], p_customers bigint[],
    p_amounts bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_txn (txn_id, customer_id, kind, ref_id, business_date)
    SELECT t.txn_id, t.customer_id, t.kind, t.ref_id, p_business_date
    FROM unnest(p_txn_ids, p_customer_ids, p_kinds, p_ref_ids) AS t(txn_id, customer_id, kind, ref_id);
    INSERT INTO ledger_account AS a (code, owner_id, customer_id, debit_total_fen, credit_total_fen)
    SELECT l.code, l.owner_id, min(l.customer_id),
           sum(greatest(l.amount_fen, 0)), sum(greatest(-l.amount_fen, 0))
    FROM unnest(p_codes, p_owners, p_customers, p_amounts) AS l(code, owner_id, customer_id, amount_fen)
    GROUP BY l.code, l.owner_id
    ORDER BY l.code, l.owner_id
    ON CONFLICT (code, owner_id) DO UPDATE
    SET debit_total_fen = a.debit_total_fen + excluded.debit_total_fen,
        credit_total_fen = a.credit_total_fen + excluded.credit_total_fen;
    INSERT INTO ledger_leg (txn_id, leg_no, code, owner_id, customer_id, amount_fen)
    SELECT l.txn_id, row_number() OVER (PARTITION BY l.txn_id ORDER BY l.n), l.code, l.owner_id,
           l.customer_id, l.amount_fen
    FROM unnest(p_leg_txn_ids, p_codes, p_owners, p_customers, p_amounts)
         WITH ORDINALITY AS l(txn_id, code, owner_id, customer_id, amount_fen, n);
END $$;

CREATE FUNCTION ledger_post(
    p_txn_id bigint, p_customer_id bigint, p_kind text, p_ref_id bigint, p_business_date date,
    p_codes text[], p_owners bigint[], p_customers bigint[], p_amounts bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_post_many(ARRAY[p_txn_id], ARRAY[p_customer_id], ARRAY[p_kind],
        ARRAY[p_ref_id], p_business_date, array_fill(p_txn_id, ARRAY[cardinality(p_codes)]),
        p_codes, p_owners, p_customers, p_amounts);
END $$;

CREATE FUNCTION book_drawdown(
    -- idempotency (all NULL: the caller stores the record)
    p_idem_channel_id text, p_idem_key text, p_request_sha256 bytea, p_status_code smallint,
    p_response_body bytea,
    -- what the caller's plan rests on
    p_credit_line_id bigint, p_annual_rate_pct numeric, p_today date,
    p_cap_group text, p_cap_max_fen bigint,  -- p_cap_max_fen NULL: no cap to check
    -- the loan
    p_loan_id bigint, p_customer_id bigint, p_tenant_id text, p_channel_id text, p_product_code text,
    p_receipt_no text, p_principal_fen bigint, p_penalty_multiplier numeric,
    p_repayment_method text, p_term_months integer, p_grace_months integer, p_start_date date,
    p_maturity_date date, p_card_ciphertext bytea, p_card_masked text, p_payment_fen bigint,
    -- its installments, one array per column
    p_seq smallint[], p_due date[], p_principal bigint[], p_interest bigint[],
    p_balance_after bigint[], p_principal_paid bigint[], p_interest_paid bigint[],
    p_penalty_unpaid bigint[], p_compound_unpaid bigint[], p_accrued_through date[],
    p_penalty_paid bigint[],
    -- the posting (Dr loan_principal / Cr disbursement_clearing) and the payment order
    p_txn_id bigint, p_codes text[], p_owners bigint[], p_customers bigint[], p_amounts bigint[],
    p_outbox_id bigint, p_outbox_payload jsonb
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    line record;
    outstanding bigint;
BEGIN
    -- Locks in the order every path takes them: line, then customer.
    SELECT status, limit_fen - used_fen AS available_fen, annual_rate_pct, expires_on
    INTO line FROM credit_line WHERE credit_line_id = p_credit_line_id FOR UPDATE;
    IF NOT FOUND OR line.status <> 'active' OR line.expires_on < p_today
       OR line.annual_rate_pct <> p_annual_rate_pct OR line.available_fen < p_principal_fen THEN
        RETURN 'recheck';
    END IF;
    IF p_cap_max_fen IS NOT NULL THEN
        PERFORM 1 FROM customer WHERE customer_id = p_customer_id FOR UPDATE;
        -- A new statement, a new snapshot: it sees every loan committed before the lock.
        SELECT coalesce(sum(outstanding_principal_fen), 0) INTO outstanding FROM loan
        WHERE customer_id = p_customer_id AND customer_cap_group = p_cap_group
          AND status IN ('disbursing', 'disbursed');
        IF outstanding + p_principal_fen > p_cap_max_fen THEN
            RETURN 'recheck';
        END IF;
    END IF;
    IF p_idem_key IS NOT NULL THEN
        -- A twin in flight holds this key's index entry: we wait for its commit.
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
    INSERT INTO installment (loan_id, customer_id, seq, due_date, principal_fen, interest_fen,
        balance_after_fen, principal_paid_fen, interest_paid_fen, penalty_unpaid_fen,
        compound_unpaid_fen, accrued_through, penalty_paid_fen)
    SELECT p_loan_id, p_customer_id, * FROM unnest(p_seq, p_due, p_principal, p_interest,
        p_balance_after, p_principal_paid, p_interest_paid, p_penalty_unpaid, p_compound_unpaid,
        p_accrued_through, p_penalty_paid);
    UPDATE credit_line SET used_fen = used_fen + p_principal_fen, updated_at = now()
    WHERE credit_line_id = p_credit_line_id;
    PERFORM ledger_post(p_txn_id, p_customer_id, 'drawdown', p_loan_id, p_today,
                        p_codes, p_owners, p_customers, p_amounts);
    INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, amount_fen, payload)
    VALUES (p_outbox_id, p_customer_id, 'disburse', p_loan_id, p_principal_fen, p_outbox_payload);
    RETURN 'booked';
END $$;
