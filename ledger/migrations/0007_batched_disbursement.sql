-- Core's "paid" for many drawdowns, applied in one call (one round trip, one commit).
--
-- complete_disbursements  lock every loan (in loan-ID order); then for each item: if it is
--                         still `disbursing`, mark it `disbursed`, post
--                         Dr disbursement_clearing / Cr core_settlement, queue its SMS
--                         and end the application's journey; in every case close the
--                         outbox row under the claim that was handed out (`attempts`),
--                         `failed` if the loan had failed, else `done`. An answer that
--                         arrives twice changes nothing the second time.
--                         Returns one row per loan it disbursed, for the latency metrics.
-- The failure path (booking reversed, line restored) stays in engine/services/disbursement.py.

CREATE FUNCTION complete_disbursements(
    p_outbox_ids bigint[], p_attempts integer[], p_loan_ids bigint[], p_core_txn_ids text[],
    p_txn_ids bigint[], p_stripes bigint[], p_sms_outbox_ids bigint[], p_sms_payloads jsonb[],
    p_business_date date, p_debit_code text, p_credit_code text
) RETURNS TABLE (
    r_loan_id bigint, r_requested_at timestamptz, r_disbursed_at timestamptz,
    r_journey_started_at timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    item record;
    started timestamptz;
BEGIN
    -- Every loan first, in loan-ID order, then the ledger's stripes: the order a
    -- drawdown and a single settlement take them in (loan, line, stripes).
    PERFORM 1 FROM loan WHERE loan_id = ANY(p_loan_ids) ORDER BY loan_id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_outbox_ids, 1), 0) LOOP
        SELECT l.loan_id, l.customer_id, l.credit_line_id, l.principal_fen, l.status,
               l.requested_at
        INTO item FROM loan l WHERE l.loan_id = p_loan_ids[i] FOR UPDATE;
        IF item.status = 'disbursing' THEN
            UPDATE loan SET status = 'disbursed', disbursed_at = now(), updated_at = now()
            WHERE loan_id = item.loan_id;
            PERFORM ledger_post(p_txn_ids[i], item.customer_id, 'disbursement', item.loan_id,
                p_business_date, ARRAY[p_debit_code, p_credit_code],
                ARRAY[p_stripes[i], p_stripes[i]], ARRAY[NULL, NULL]::bigint[],
                ARRAY[item.principal_fen, -item.principal_fen]);
            INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, payload)
            VALUES (p_sms_outbox_ids[i], item.customer_id, 'sms', item.loan_id, p_sms_payloads[i]);
            -- The first loan of a line granted through an application ends its journey.
            started := NULL;
            UPDATE application a
            SET steps = a.steps || jsonb_build_array(jsonb_build_object('step', 'disbursed',
                    -- the format of every other step's time: UTC, ISO 8601 (Python's isoformat)
                    'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')))
            FROM credit_line c
            WHERE c.credit_line_id = item.credit_line_id AND a.application_id = c.application_id
              AND NOT a.steps @> '[{"step": "disbursed"}]'
            RETURNING a.created_at INTO started;
            r_loan_id := item.loan_id;
            r_requested_at := item.requested_at;
            r_disbursed_at := now();
            r_journey_started_at := started;
            RETURN NEXT;
        END IF;
        UPDATE outbox
        SET state = CASE WHEN item.status = 'failed' THEN 'failed' ELSE 'done' END,
            outcome = p_core_txn_ids[i], done_at = now(), lease_until = NULL
        WHERE outbox_id = p_outbox_ids[i] AND attempts = p_attempts[i]
          AND state IN ('sending', 'unknown');
    END LOOP;
END $$;
