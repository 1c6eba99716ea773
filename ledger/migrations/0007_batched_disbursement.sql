-- Core's "paid" for many drawdowns, applied in one call (one round trip, one commit)
-- and set by set: a fixed number of statements per batch, not per loan.
--
-- complete_disbursements  lock every loan (in loan-ID order), then: the loans still
--                         `disbursing` become `disbursed`, each posts
--                         Dr disbursement_clearing / Cr core_settlement (all through
--                         the caller's one stripe), queues its SMS and ends its
--                         application's journey; every outbox row is closed under
--                         the claim that was handed out (`attempts`), `failed` if its
--                         loan had failed, else `done`. An answer that arrives twice
--                         changes nothing the second time.
--                         Returns one row per loan it disbursed, for the latency metrics.
-- The failure path (booking reversed, line restored) stays in engine/services/disbursement.py.

CREATE FUNCTION complete_disbursements(
    p_outbox_ids bigint[], p_attempts integer[], p_loan_ids bigint[], p_core_txn_ids text[],
    p_txn_ids bigint[], p_sms_outbox_ids bigint[], p_sms_payloads jsonb[],
    p_business_date date, p_stripe bigint, p_debit_code text, p_credit_code text
) RETURNS TABLE (
    r_loan_id bigint, r_requested_at timestamptz, r_disbursed_at timestamptz,
    r_journey_started_at timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    loans bigint[];
    customers bigint[];
    lines bigint[];
    amounts bigint[];
    requested timestamptz[];
    txns bigint[];
    leg_txns bigint[];
    leg_codes text[];
    leg_amounts bigint[];
BEGIN
    -- Every loan first, in loan-ID order, then the ledger's stripes: the order a
    -- drawdown and a single settlement take them in (loan, line, stripes).
    PERFORM 1 FROM loan WHERE loan_id = ANY(p_loan_ids) ORDER BY loan_id FOR UPDATE;
    -- A new statement, a new snapshot: the statuses as the locks found them.
    WITH item AS (
        SELECT * FROM unnest(p_loan_ids, p_txn_ids, p_sms_outbox_ids, p_sms_payloads)
            AS i(loan_id, txn_id, sms_outbox_id, sms_payload)
    ), paid AS (
        UPDATE loan l SET status = 'disbursed', disbursed_at = now(), updated_at = now()
        FROM item WHERE l.loan_id = item.loan_id AND l.status = 'disbursing'
        RETURNING l.loan_id, l.customer_id, l.credit_line_id, l.principal_fen, l.requested_at,
                  item.txn_id, item.sms_outbox_id, item.sms_payload
    ), sms AS (
        INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, payload)
        SELECT sms_outbox_id, customer_id, 'sms', loan_id, sms_payload FROM paid
    )
    SELECT array_agg(loan_id ORDER BY loan_id), array_agg(customer_id ORDER BY loan_id),
           array_agg(credit_line_id ORDER BY loan_id), array_agg(principal_fen ORDER BY loan_id),
           array_agg(requested_at ORDER BY loan_id), array_agg(txn_id ORDER BY loan_id)
    INTO loans, customers, lines, amounts, requested, txns FROM paid;

    IF loans IS NOT NULL THEN
        SELECT array_agg(t.txn_id ORDER BY t.n, leg.no), array_agg(leg.code ORDER BY t.n, leg.no),
               array_agg(leg.sign * t.amount ORDER BY t.n, leg.no)
        INTO leg_txns, leg_codes, leg_amounts
        FROM unnest(txns, amounts) WITH ORDINALITY AS t(txn_id, amount, n)
        CROSS JOIN (VALUES (1, p_debit_code, 1), (2, p_credit_code, -1)) AS leg(no, code, sign);
        PERFORM ledger_post_many(txns, customers,
            array_fill('disbursement'::text, ARRAY[cardinality(txns)]), loans, p_business_date,
            leg_txns, leg_codes, array_fill(p_stripe, ARRAY[cardinality(leg_txns)]),
            array_fill(NULL::bigint, ARRAY[cardinality(leg_txns)]), leg_amounts);
    END IF;

    UPDATE outbox o
    SET state = CASE WHEN l.status = 'failed' THEN 'failed' ELSE 'done' END,
        outcome = i.core_txn_id, done_at = now(), lease_until = NULL
    FROM unnest(p_outbox_ids, p_attempts, p_loan_ids, p_core_txn_ids)
             AS i(outbox_id, attempts, loan_id, core_txn_id)
    LEFT JOIN loan l ON l.loan_id = i.loan_id
    WHERE o.outbox_id = i.outbox_id AND o.attempts = i.attempts
      AND o.state IN ('sending', 'unknown');

    IF loans IS NULL THEN
        RETURN;
    END IF;
    -- The first loan of a line granted through an application ends its journey.
    RETURN QUERY
    WITH ended AS (
        UPDATE application a
        SET steps = a.steps || jsonb_build_array(jsonb_build_object('step', 'disbursed',
                -- the format of every other step's time: UTC, ISO 8601 (Python's isoformat)
                'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')))
        FROM credit_line c
        WHERE c.credit_line_id = ANY(lines) AND a.application_id = c.application_id
          AND NOT a.steps @> '[{"step": "disbursed"}]'
        RETURNING c.credit_line_id, a.created_at
    ), first_of_line AS (
        SELECT DISTINCT ON (p.line) p.loan_id
        FROM unnest(loans, lines) AS p(loan_id, line) ORDER BY p.line, p.loan_id
    )
    SELECT p.loan_id, p.requested_at, now(),
           CASE WHEN f.loan_id IS NOT NULL THEN e.created_at END
    FROM unnest(loans, lines, requested) AS p(loan_id, line, requested_at)
    LEFT JOIN ended e ON e.credit_line_id = p.line
    LEFT JOIN first_of_line f ON f.loan_id = p.loan_id;
END $$;
