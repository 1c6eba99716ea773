-- One booking function where there were two: `book_drawdowns` (0010) books any number
-- of drawdowns, one included, so `book_drawdown` (0006/0009) becomes a wrapper of it and
-- there is one definition of how a drawdown is booked to keep right.
--
-- What kept them apart was 0010's lock time-out, a setting of the function: a group call
-- is a statement of its own and must not wait long on one held line, while the engine's
-- locked path calls the booking inside its own transaction, where a 250 ms time-out
-- would turn ordinary waits for the internal accounts' stripes into errors. The time-out
-- is now an argument, `p_lock_timeout`: the group call passes '250ms' (set for its own
-- one-statement transaction), the locked path NULL (the transaction's own setting).
-- The locked path also books without an idempotency record (the engine writes it in
-- the same transaction): a drawdown whose `p_idem_key` is NULL gets none.
--
-- The booking itself is 0010's, unchanged: the answers 'booked', 'recheck', 'replay';
-- the locks, lines then customers then keys then stripes, each in order.

DROP FUNCTION book_drawdowns(text[], text[], bytea[], smallint[], bytea[], bigint[], numeric[],
    date, text[], bigint[], bigint[], bigint[], text[], text[], text[], text[], bigint[],
    numeric[], text[], integer[], integer[], date[], date[], bytea[], text[], bigint[], text[],
    text[], text[], text[], text[], text[], text[], text[], text[], text[], text[], bigint[],
    bigint[], text[], bigint[], bigint[], bigint[], bigint[], jsonb[]);

CREATE FUNCTION book_drawdowns(
    p_idem_channel_id text[], p_idem_key text[], p_request_sha256 bytea[],
    p_status_code smallint[], p_response_body bytea[],
    p_credit_line_id bigint[], p_annual_rate_pct numeric[], p_today date,
    p_cap_group text[], p_cap_max_fen bigint[],
    p_loan_id bigint[], p_customer_id bigint[], p_tenant_id text[], p_channel_id text[],
    p_product_code text[], p_receipt_no text[], p_principal_fen bigint[],
    p_penalty_multiplier numeric[], p_repayment_method text[], p_term_months integer[],
    p_grace_months integer[], p_start_date date[], p_maturity_date date[],
    p_card_ciphertext bytea[], p_card_masked text[], p_payment_fen bigint[],
    p_seq text[], p_due text[], p_principal text[], p_interest text[], p_balance_after text[],
    p_principal_paid text[], p_interest_paid text[], p_penalty_unpaid text[],
    p_compound_unpaid text[], p_accrued_through text[], p_penalty_paid text[],
    p_txn_id bigint[], p_leg_txn_ids bigint[], p_codes text[], p_owners bigint[],
    p_customers bigint[], p_amounts bigint[],
    p_outbox_id bigint[], p_outbox_payload jsonb[], p_lock_timeout text
) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_loan_id);
    outcome text[] := array_fill('booked'::text, ARRAY[n]);
    refused integer[];
    booked_txns bigint[];
BEGIN
    IF p_lock_timeout IS NOT NULL THEN  -- to the end of the caller's transaction
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    -- One element per drawdown in every per-drawdown array, and legs that line up: a
    -- short array would read as NULLs (a cap not checked), a long one as more answers.
    IF EXISTS (SELECT 1 FROM unnest(ARRAY[
            cardinality(p_idem_channel_id), cardinality(p_idem_key),
            cardinality(p_request_sha256), cardinality(p_status_code),
            cardinality(p_response_body), cardinality(p_credit_line_id),
            cardinality(p_annual_rate_pct), cardinality(p_cap_group), cardinality(p_cap_max_fen),
            cardinality(p_customer_id), cardinality(p_tenant_id), cardinality(p_channel_id),
            cardinality(p_product_code), cardinality(p_receipt_no), cardinality(p_principal_fen),
            cardinality(p_penalty_multiplier), cardinality(p_repayment_method),
            cardinality(p_term_months), cardinality(p_grace_months), cardinality(p_start_date),
            cardinality(p_maturity_date), cardinality(p_card_ciphertext),
            cardinality(p_card_masked), cardinality(p_payment_fen), cardinality(p_seq),
            cardinality(p_due), cardinality(p_principal), cardinality(p_interest),
            cardinality(p_balance_after), cardinality(p_principal_paid),
            cardinality(p_interest_paid), cardinality(p_penalty_unpaid),
            cardinality(p_compound_unpaid), cardinality(p_accrued_through),
            cardinality(p_penalty_paid), cardinality(p_txn_id), cardinality(p_outbox_id),
            cardinality(p_outbox_payload)]) AS c(len) WHERE c.len IS DISTINCT FROM n)
       OR p_today IS NULL
       OR cardinality(p_codes) IS DISTINCT FROM cardinality(p_leg_txn_ids)
       OR cardinality(p_owners) IS DISTINCT FROM cardinality(p_leg_txn_ids)
       OR cardinality(p_customers) IS DISTINCT FROM cardinality(p_leg_txn_ids)
       OR cardinality(p_amounts) IS DISTINCT FROM cardinality(p_leg_txn_ids) THEN
        RAISE EXCEPTION 'book_drawdowns: arrays of unequal length' USING ERRCODE = '22023';
    END IF;

    -- A second drawdown of this same call on a line, of a customer or under an
    -- idempotency key: its checks would not see the first one's writes.
    SELECT coalesce(array_agg(d.n), '{}') INTO refused
    FROM (SELECT i.n,
                 row_number() OVER (PARTITION BY i.line_id ORDER BY i.n) AS line_rank,
                 row_number() OVER (PARTITION BY i.customer_id ORDER BY i.n) AS customer_rank,
                 row_number() OVER (PARTITION BY i.channel_id, i.idem_key ORDER BY i.n) AS key_rank,
                 i.idem_key
          FROM unnest(p_credit_line_id, p_customer_id, p_idem_channel_id, p_idem_key)
               WITH ORDINALITY AS i(line_id, customer_id, channel_id, idem_key, n)) d
    WHERE d.line_rank > 1 OR d.customer_rank > 1 OR (d.idem_key IS NOT NULL AND d.key_rank > 1);
    FOR k IN 1 .. cardinality(refused) LOOP
        outcome[refused[k]] := 'recheck';
    END LOOP;

    -- The lines, locked in id order, against what each plan rested on.
    SELECT coalesce(array_agg(i.n), '{}') INTO refused
    FROM unnest(p_credit_line_id, p_annual_rate_pct, p_principal_fen) WITH ORDINALITY
         AS i(line_id, rate, principal, n)
    LEFT JOIN (SELECT credit_line_id, status, expires_on, annual_rate_pct,
                      limit_fen - used_fen AS available_fen
               FROM credit_line WHERE credit_line_id = ANY (p_credit_line_id)
               ORDER BY credit_line_id FOR UPDATE) l ON l.credit_line_id = i.line_id
    WHERE outcome[i.n] = 'booked'
      AND (l.credit_line_id IS NULL OR l.status <> 'active' OR l.expires_on < p_today
           OR l.annual_rate_pct <> i.rate OR l.available_fen < i.principal);
    FOR k IN 1 .. cardinality(refused) LOOP
        outcome[refused[k]] := 'recheck';
    END LOOP;

    -- Every customer of the call locked now, in id order, before the loans' foreign
    -- keys would lock them one by one in the call's order (two calls could then wait
    -- on each other). NO KEY UPDATE: it excludes every other cap check (FOR UPDATE in
    -- `book_drawdown` and the locked path), not other transactions' foreign keys.
    PERFORM 1 FROM customer
    WHERE customer_id IN (SELECT i.customer_id
                          FROM unnest(p_customer_id) WITH ORDINALITY AS i(customer_id, n)
                          WHERE outcome[i.n] = 'booked')
    ORDER BY customer_id FOR NO KEY UPDATE;
    -- Customer caps: (a new statement, a new snapshot) the outstanding principal in the
    -- cap group, as `book_drawdown` does.
    IF EXISTS (SELECT 1 FROM unnest(p_cap_max_fen) AS c(cap_max) WHERE c.cap_max IS NOT NULL) THEN
        SELECT coalesce(array_agg(i.n), '{}') INTO refused
        FROM unnest(p_customer_id, p_cap_group, p_cap_max_fen, p_principal_fen) WITH ORDINALITY
             AS i(customer_id, cap_group, cap_max, principal, n)
        WHERE i.cap_max IS NOT NULL AND outcome[i.n] = 'booked'
          AND (SELECT coalesce(sum(outstanding_principal_fen), 0) FROM loan
               WHERE customer_id = i.customer_id AND customer_cap_group = i.cap_group
                 AND status IN ('disbursing', 'disbursed')) + i.principal > i.cap_max;
        FOR k IN 1 .. cardinality(refused) LOOP
            outcome[refused[k]] := 'recheck';
        END LOOP;
    END IF;

    -- The idempotency records; a twin in flight holds its key's index entry, and we
    -- wait for its commit. A key already recorded is a replay.
    WITH recorded AS (
        INSERT INTO idempotency_record
            (channel_id, idem_key, customer_id, request_sha256, status_code, response_body)
        SELECT x.channel_id, x.idem_key, x.customer_id, x.sha256, x.status_code, x.body
        FROM unnest(p_idem_channel_id, p_idem_key, p_customer_id, p_request_sha256,
                    p_status_code, p_response_body) WITH ORDINALITY
             AS x(channel_id, idem_key, customer_id, sha256, status_code, body, n)
        WHERE outcome[x.n] = 'booked' AND x.idem_key IS NOT NULL
        ORDER BY x.channel_id, x.idem_key  -- twins' keys in one order in every call
        ON CONFLICT (channel_id, idem_key) DO NOTHING
        RETURNING channel_id, idem_key)
    SELECT coalesce(array_agg(i.n), '{}') INTO refused
    FROM unnest(p_idem_channel_id, p_idem_key) WITH ORDINALITY AS i(channel_id, idem_key, n)
    WHERE outcome[i.n] = 'booked' AND i.idem_key IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM recorded r
                      WHERE r.channel_id = i.channel_id AND r.idem_key = i.idem_key);
    FOR k IN 1 .. cardinality(refused) LOOP
        outcome[refused[k]] := 'replay';
    END LOOP;

    SELECT array_agg(t.txn_id ORDER BY t.n) INTO booked_txns
    FROM unnest(p_txn_id) WITH ORDINALITY AS t(txn_id, n) WHERE outcome[t.n] = 'booked';
    IF booked_txns IS NULL THEN
        RETURN outcome;
    END IF;

    INSERT INTO loan (loan_id, customer_id, credit_line_id, tenant_id, channel_id, product_code,
        customer_cap_group, receipt_no, principal_fen, outstanding_principal_fen,
        annual_rate_pct, penalty_multiplier, repayment_method, term_months, grace_months,
        start_date, maturity_date, status, disburse_to_ciphertext, disburse_to_masked,
        payment_fen, requested_at, disbursed_at)
    SELECT x.loan_id, x.customer_id, x.line_id, x.tenant_id, x.channel_id, x.product_code,
        x.cap_group, x.receipt_no, x.principal, x.principal, x.rate, x.penalty_multiplier,
        x.method, x.term, x.grace, x.start_date, x.maturity_date, 'disbursing', x.card,
        x.card_masked, x.payment, now(), NULL
    FROM unnest(p_loan_id, p_customer_id, p_credit_line_id, p_tenant_id, p_channel_id,
        p_product_code, p_cap_group, p_receipt_no, p_principal_fen, p_annual_rate_pct,
        p_penalty_multiplier, p_repayment_method, p_term_months, p_grace_months, p_start_date,
        p_maturity_date, p_card_ciphertext, p_card_masked, p_payment_fen) WITH ORDINALITY
        AS x(loan_id, customer_id, line_id, tenant_id, channel_id, product_code, cap_group,
             receipt_no, principal, rate, penalty_multiplier, method, term, grace, start_date,
             maturity_date, card, card_masked, payment, n)
    WHERE outcome[x.n] = 'booked';

    INSERT INTO loan_plan (loan_id, customer_id, seq, due_date, principal_fen, interest_fen,
        balance_after_fen, principal_paid_fen, interest_paid_fen, penalty_unpaid_fen,
        compound_unpaid_fen, accrued_through, penalty_paid_fen)
    SELECT x.loan_id, x.customer_id, x.seq::smallint[], x.due::date[], x.principal::bigint[],
        x.interest::bigint[], x.balance_after::bigint[], x.principal_paid::bigint[],
        x.interest_paid::bigint[], x.penalty_unpaid::bigint[], x.compound_unpaid::bigint[],
        x.accrued_through::date[], x.penalty_paid::bigint[]
    FROM unnest(p_loan_id, p_customer_id, p_seq, p_due, p_principal, p_interest,
        p_balance_after, p_principal_paid, p_interest_paid, p_penalty_unpaid, p_compound_unpaid,
        p_accrued_through, p_penalty_paid) WITH ORDINALITY
        AS x(loan_id, customer_id, seq, due, principal, interest, balance_after,
             principal_paid, interest_paid, penalty_unpaid, compound_unpaid, accrued_through,
             penalty_paid, n)
    WHERE outcome[x.n] = 'booked';

    -- One line per booked drawdown (duplicates were sent back above).
    UPDATE credit_line l SET used_fen = l.used_fen + x.principal, updated_at = now()
    FROM unnest(p_credit_line_id, p_principal_fen) WITH ORDINALITY AS x(line_id, principal, n)
    WHERE l.credit_line_id = x.line_id AND outcome[x.n] = 'booked';

    PERFORM ledger_post_many(
        booked_txns,
        (SELECT array_agg(x.customer_id ORDER BY x.n)
         FROM unnest(p_customer_id) WITH ORDINALITY AS x(customer_id, n)
         WHERE outcome[x.n] = 'booked'),
        array_fill('drawdown'::text, ARRAY[cardinality(booked_txns)]),
        (SELECT array_agg(x.loan_id ORDER BY x.n)
         FROM unnest(p_loan_id) WITH ORDINALITY AS x(loan_id, n)
         WHERE outcome[x.n] = 'booked'),
        p_today,
        legs.txn_ids, legs.codes, legs.owners, legs.customers, legs.amounts)
    FROM (SELECT array_agg(l.txn_id ORDER BY l.n) AS txn_ids,
                 array_agg(l.code ORDER BY l.n) AS codes,
                 array_agg(l.owner_id ORDER BY l.n) AS owners,
                 array_agg(l.customer_id ORDER BY l.n) AS customers,
                 array_agg(l.amount_fen ORDER BY l.n) AS amounts
          FROM unnest(p_leg_txn_ids, p_codes, p_owners, p_customers, p_amounts) WITH ORDINALITY
               AS l(txn_id, code, owner_id, customer_id, amount_fen, n)
          WHERE l.txn_id = ANY (booked_txns)) legs;

    INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, amount_fen, payload)
    SELECT x.outbox_id, x.customer_id, 'disburse', x.loan_id, x.principal, x.payload
    FROM unnest(p_outbox_id, p_customer_id, p_loan_id, p_principal_fen, p_outbox_payload)
         WITH ORDINALITY AS x(outbox_id, customer_id, loan_id, principal, payload, n)
    WHERE outcome[x.n] = 'booked';
    RETURN outcome;
END $$;

-- 0009's single booking, now one drawdown through `book_drawdowns`, with no lock
-- time-out of its own (kept for callers of that version and for ad-hoc use).
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
) RETURNS text LANGUAGE sql AS $$
    SELECT (book_drawdowns(
        ARRAY[p_idem_channel_id], ARRAY[p_idem_key], ARRAY[p_request_sha256],
        ARRAY[p_status_code], ARRAY[p_response_body], ARRAY[p_credit_line_id],
        ARRAY[p_annual_rate_pct], p_today, ARRAY[p_cap_group], ARRAY[p_cap_max_fen],
        ARRAY[p_loan_id], ARRAY[p_customer_id], ARRAY[p_tenant_id], ARRAY[p_channel_id],
        ARRAY[p_product_code], ARRAY[p_receipt_no], ARRAY[p_principal_fen],
        ARRAY[p_penalty_multiplier], ARRAY[p_repayment_method], ARRAY[p_term_months],
        ARRAY[p_grace_months], ARRAY[p_start_date], ARRAY[p_maturity_date],
        ARRAY[p_card_ciphertext], ARRAY[p_card_masked], ARRAY[p_payment_fen],
        ARRAY[p_seq::text], ARRAY[p_due::text], ARRAY[p_principal::text],
        ARRAY[p_interest::text], ARRAY[p_balance_after::text], ARRAY[p_principal_paid::text],
        ARRAY[p_interest_paid::text], ARRAY[p_penalty_unpaid::text],
        ARRAY[p_compound_unpaid::text], ARRAY[p_accrued_through::text],
        ARRAY[p_penalty_paid::text],
        ARRAY[p_txn_id], array_fill(p_txn_id, ARRAY[cardinality(p_codes)]), p_codes, p_owners,
        p_customers, p_amounts, ARRAY[p_outbox_id], ARRAY[p_outbox_payload], NULL))[1]
$$;
