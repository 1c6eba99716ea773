-- Issue 20, second round: phase A of the repayments that reach a shard database
-- together, in one statement, with each debit's outbox row claimed for the request's
-- own inline send: `open_repayments`.
--
-- `open_repayment_once` (0019) opens one repayment per call; the request then claimed
-- the debit's outbox row in a statement and a commit of their own before calling core.
-- Here each repayment of the call is checked exactly as there (its loans locked in id
-- order, the row versions read, free, disbursed), its durable record, nonce,
-- repayment, the loans' hold and the debit's outbox row written; with p_lease_s the row
-- is written as the inline claim leaves it ('sending', attempt 1, leased, its send
-- time stamped: the relay takes it only once the lease runs out, and then asks core
-- before anything else, as for any claim whose holder went away). p_lease_s NULL
-- leaves it 'pending' for the relay.
--
-- Arguments: per repayment (index r), one array element; per loan, one element each,
-- `p_loan_r` naming its repayment's index. The business date is shared by the call.
-- The answer, per repayment in order: 'booked'; 'replay' (its key's durable record
-- exists: nothing of it written); 'recheck' (a loan is not the row read, is held, is
-- not disbursed, or a loan or key appears twice in the call: nothing of it written; the engine runs
-- the locked path, which names the refusal). `sent_at`: the send time stamped on the
-- claimed rows (the transaction's); `opened_xid`: this transaction's ID, the row
-- version (xmin) its hold leaves on the loans, which phase B compares (its inline
-- completion then needs no read of its own). A nonce seen before fails the call
-- (unique_violation), as a lock held past p_lock_timeout does: nothing written, and the
-- engine runs each of its repayments on the locked path.
-- Locks: every loan of the call and its plan in id order (the locked path's order),
-- then the durable records in key order.

CREATE FUNCTION open_repayments(
    p_idem_channel_id text[], p_idem_key text[], p_request_sha256 bytea[],
    p_status_code smallint[], p_response_body bytea[], p_nonce text[],
    p_repayment_id bigint[], p_customer_id bigint[], p_tenant_id text[], p_channel_id text[],
    p_total_fen bigint[], p_card_masked text[], p_card_ciphertext bytea[],
    p_business_date date, p_request_items jsonb[],
    p_loan_r integer[], p_loan_id bigint[], p_loan_xmin text[], p_plan_xmin text[],
    p_outbox_id bigint[], p_outbox_payload jsonb[],
    p_lease_s float8, p_lock_timeout text,
    OUT outcomes text[], OUT sent_at timestamptz, OUT opened_xid text
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n integer := cardinality(p_repayment_id);
    refused integer[];
BEGIN
    IF p_lock_timeout IS NOT NULL THEN  -- to the end of the caller's transaction
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    IF coalesce(n, 0) = 0
       OR EXISTS (SELECT 1 FROM unnest(ARRAY[
            cardinality(p_idem_channel_id), cardinality(p_idem_key),
            cardinality(p_request_sha256), cardinality(p_status_code),
            cardinality(p_response_body), cardinality(p_nonce), cardinality(p_customer_id),
            cardinality(p_tenant_id), cardinality(p_channel_id), cardinality(p_total_fen),
            cardinality(p_card_masked), cardinality(p_card_ciphertext),
            cardinality(p_request_items), cardinality(p_outbox_id),
            cardinality(p_outbox_payload)]) AS c(len) WHERE c.len IS DISTINCT FROM n)
       OR cardinality(p_loan_id) IS DISTINCT FROM cardinality(p_loan_r)
       OR cardinality(p_loan_xmin) IS DISTINCT FROM cardinality(p_loan_r)
       OR cardinality(p_plan_xmin) IS DISTINCT FROM cardinality(p_loan_r)
       OR EXISTS (SELECT 1 FROM unnest(p_loan_r) AS l(r) WHERE l.r IS NULL OR l.r NOT BETWEEN 1 AND n)
       OR EXISTS (SELECT 1 FROM generate_series(1, n) AS g(r)
                  WHERE NOT g.r = ANY (p_loan_r))  -- every repayment has a loan
       OR p_business_date IS NULL THEN
        RAISE EXCEPTION 'open_repayments: arrays of unequal length' USING ERRCODE = '22023';
    END IF;
    outcomes := array_fill('booked'::text, ARRAY[n]);
    sent_at := now();

    -- The loans and their plans, locked in id order: the row versions read, free and
    -- disbursed, each loan in one repayment of the call only.
    SELECT coalesce(array_agg(DISTINCT i.r), '{}') INTO refused
    FROM unnest(p_loan_r, p_loan_id, p_loan_xmin, p_plan_xmin)
         AS i(r, loan_id, loan_xmin, plan_xmin)
    LEFT JOIN (SELECT loan.loan_id, loan.xmin::text AS loan_xmin, p.xmin::text AS plan_xmin,
                      loan.pending_repayment_id, loan.status
               FROM loan JOIN loan_plan p ON p.loan_id = loan.loan_id
               WHERE loan.loan_id = ANY (p_loan_id)
               ORDER BY loan.loan_id FOR UPDATE OF loan, p) l ON l.loan_id = i.loan_id
    WHERE l.loan_id IS NULL OR l.loan_xmin <> i.loan_xmin OR l.plan_xmin <> i.plan_xmin
       OR l.pending_repayment_id IS NOT NULL OR l.status <> 'disbursed'
       OR (SELECT count(*) FROM unnest(p_loan_id) AS t(id) WHERE t.id = i.loan_id) > 1
       OR EXISTS (SELECT 1 FROM unnest(p_idem_channel_id, p_idem_key) WITH ORDINALITY
                                AS t(channel_id, idem_key, r)
                  WHERE t.channel_id = p_idem_channel_id[i.r]
                    AND t.idem_key = p_idem_key[i.r] AND t.r <> i.r);
    FOR k IN 1 .. cardinality(refused) LOOP
        outcomes[refused[k]] := 'recheck';
    END LOOP;

    -- The durable records; a twin in flight holds its key's index entry, and we wait for
    -- its commit. A key already recorded is a replay.
    WITH recorded AS (
        INSERT INTO idempotency_record
            (channel_id, idem_key, customer_id, request_sha256, status_code, response_body)
        SELECT x.channel_id, x.idem_key, x.customer_id, x.sha, x.status_code, x.body
        FROM unnest(p_idem_channel_id, p_idem_key, p_customer_id, p_request_sha256,
                    p_status_code, p_response_body) WITH ORDINALITY
             AS x(channel_id, idem_key, customer_id, sha, status_code, body, r)
        WHERE outcomes[x.r] = 'booked'
        ORDER BY x.channel_id, x.idem_key
        ON CONFLICT (channel_id, idem_key) DO NOTHING
        RETURNING channel_id, idem_key)
    SELECT coalesce(array_agg(x.r), '{}') INTO refused
    FROM unnest(p_idem_channel_id, p_idem_key) WITH ORDINALITY AS x(channel_id, idem_key, r)
    WHERE outcomes[x.r] = 'booked'
      AND NOT EXISTS (SELECT 1 FROM recorded d
                      WHERE d.channel_id = x.channel_id AND d.idem_key = x.idem_key);
    FOR k IN 1 .. cardinality(refused) LOOP
        outcomes[refused[k]] := 'replay';
    END LOOP;
    IF NOT 'booked' = ANY (outcomes) THEN
        RETURN;
    END IF;

    -- Seen before: unique_violation, the whole statement undone.
    INSERT INTO request_nonce (channel_id, nonce)
    SELECT x.channel_id, x.nonce
    FROM unnest(p_idem_channel_id, p_nonce) WITH ORDINALITY AS x(channel_id, nonce, r)
    WHERE outcomes[x.r] = 'booked' AND x.nonce IS NOT NULL
    ORDER BY x.channel_id, x.nonce;

    INSERT INTO repayment (repayment_id, customer_id, tenant_id, channel_id, status,
        total_fen, debit_from_masked, debit_from_ciphertext, business_date, request_items,
        channel_key)
    SELECT x.repayment_id, x.customer_id, x.tenant_id, x.channel_id, 'processing', x.total,
        x.masked, x.ciphertext, p_business_date, x.items, x.idem_key
    FROM unnest(p_repayment_id, p_customer_id, p_tenant_id, p_channel_id, p_total_fen,
                p_card_masked, p_card_ciphertext, p_request_items, p_idem_key) WITH ORDINALITY
         AS x(repayment_id, customer_id, tenant_id, channel_id, total, masked, ciphertext,
              items, idem_key, r)
    WHERE outcomes[x.r] = 'booked';

    UPDATE loan SET pending_repayment_id = p_repayment_id[x.r]
    FROM unnest(p_loan_r, p_loan_id) AS x(r, loan_id)
    WHERE loan.loan_id = x.loan_id AND outcomes[x.r] = 'booked';

    INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, amount_fen, payload, state,
        attempts, lease_until, last_sent_at)
    SELECT x.outbox_id, x.customer_id, 'debit', x.repayment_id, x.total, x.payload,
        CASE WHEN p_lease_s IS NULL THEN 'pending' ELSE 'sending' END,
        CASE WHEN p_lease_s IS NULL THEN 0 ELSE 1 END,
        now() + make_interval(secs => p_lease_s),
        CASE WHEN p_lease_s IS NULL THEN NULL ELSE now() END
    FROM unnest(p_outbox_id, p_customer_id, p_repayment_id, p_total_fen, p_outbox_payload)
         WITH ORDINALITY AS x(outbox_id, customer_id, repayment_id, total, payload, r)
    WHERE outcomes[x.r] = 'booked';
    opened_xid := pg_current_xact_id()::xid::text;
END $$;
