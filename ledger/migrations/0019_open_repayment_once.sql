-- Phase A of a repayment in one statement: `open_repayment_once`.
--
-- On its own, phase A (`open_repayment` in engine/services/repayments.py, run by the
-- idempotency runner in one transaction) is about eleven round trips: BEGIN, the
-- durable record looked up, the nonce, the customer, the card, each loan locked, the
-- repayment, the loans held, the debit's outbox row, the record, COMMIT. Here the
-- engine reads the customer's tenant, whether the card is bound and the loans with
-- their plans in one query, without locks, sizes every item in Python exactly as the
-- locked path does, and this function checks under the loans' locks that they are the
-- row versions read (xmin) and free, then writes the durable record (with the
-- request's nonce), the repayment, the loans' hold and the debit's outbox row.
--
-- The answer: 'booked'; 'replay' (the key's record exists: nothing written); or
-- 'recheck' (a loan is not what was read, or is held: nothing written; the engine
-- runs the locked path, which names the refusal). A nonce seen before fails the
-- statement (unique_violation): nothing written, and the locked path refuses it.
-- Locks: the loans and their plans in id order, as the locked path takes them.

CREATE FUNCTION open_repayment_once(
    p_idem_channel_id text, p_idem_key text, p_request_sha256 bytea, p_status_code smallint,
    p_response_body bytea, p_nonce text,
    p_repayment_id bigint, p_customer_id bigint, p_tenant_id text, p_channel_id text,
    p_total_fen bigint, p_card_masked text, p_card_ciphertext bytea, p_business_date date,
    p_request_items jsonb,
    p_loan_ids bigint[], p_loan_xmins text[], p_plan_xmins text[],
    p_outbox_id bigint, p_outbox_payload jsonb
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    locked integer;
BEGIN
    IF cardinality(p_loan_xmins) IS DISTINCT FROM cardinality(p_loan_ids)
       OR cardinality(p_plan_xmins) IS DISTINCT FROM cardinality(p_loan_ids)
       OR coalesce(cardinality(p_loan_ids), 0) = 0 THEN
        RAISE EXCEPTION 'open_repayment_once: arrays of unequal length' USING ERRCODE = '22023';
    END IF;
    SELECT count(*) INTO locked
    FROM unnest(p_loan_ids, p_loan_xmins, p_plan_xmins) AS i(loan_id, loan_xmin, plan_xmin)
    JOIN (SELECT loan.loan_id, loan.xmin::text AS loan_xmin, p.xmin::text AS plan_xmin,
                 loan.pending_repayment_id, loan.status
          FROM loan JOIN loan_plan p ON p.loan_id = loan.loan_id
          WHERE loan.loan_id = ANY (p_loan_ids)
          ORDER BY loan.loan_id FOR UPDATE OF loan, p) l ON l.loan_id = i.loan_id
    WHERE l.loan_xmin = i.loan_xmin AND l.plan_xmin = i.plan_xmin
      AND l.pending_repayment_id IS NULL AND l.status = 'disbursed';
    IF locked <> cardinality(p_loan_ids) THEN
        RETURN 'recheck';
    END IF;

    -- The durable record; a twin in flight holds its key's index entry, and we wait for
    -- its commit. A key already recorded is a replay.
    INSERT INTO idempotency_record
        (channel_id, idem_key, customer_id, request_sha256, status_code, response_body)
    VALUES (p_idem_channel_id, p_idem_key, p_customer_id, p_request_sha256, p_status_code,
            p_response_body)
    ON CONFLICT (channel_id, idem_key) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'replay';
    END IF;
    IF p_nonce IS NOT NULL THEN  -- seen before: unique_violation, the statement undone
        INSERT INTO request_nonce (channel_id, nonce) VALUES (p_idem_channel_id, p_nonce);
    END IF;

    INSERT INTO repayment (repayment_id, customer_id, tenant_id, channel_id, status,
        total_fen, debit_from_masked, debit_from_ciphertext, business_date, request_items,
        channel_key)
    VALUES (p_repayment_id, p_customer_id, p_tenant_id, p_channel_id, 'processing',
        p_total_fen, p_card_masked, p_card_ciphertext, p_business_date, p_request_items,
        p_idem_key);
    UPDATE loan SET pending_repayment_id = p_repayment_id WHERE loan_id = ANY (p_loan_ids);
    INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, amount_fen, payload)
    VALUES (p_outbox_id, p_customer_id, 'debit', p_repayment_id, p_total_fen, p_outbox_payload);
    RETURN 'booked';
END $$;
