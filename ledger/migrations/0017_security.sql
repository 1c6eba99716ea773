-- Issue 21 (security hardening), each shard.
--
-- request_nonce   the nonce of every request run under an idempotency key, written in
--                 the same transaction as its idempotency record: a signed request
--                 captured and resent after Redis lost its keys is refused here
--                 (AUTH_NONCE_REPLAYED). Kept `security.nonce_retention_s` (a nonce is
--                 only good within the ±300 s clock window), swept by the relay.
-- record_request_nonces  the group booking's nonces, after `book_drawdowns` in the same
--                 statement: a replayed one fails the call, whose drawdowns are each
--                 redone on the locked path (which then names the refusal).
-- customer_card   the cards money may go to or come from for a customer: the card
--                 registered with the customer, and cards bound later through
--                 POST /v1/customers/{id}/cards (four-factor verified), with who bound
--                 each and under which key. By the keyed hash of the number only; the
--                 masked number for display. Append-only: the audit trail of bindings.
-- data_migration  the data steps `python -m engine migrate` runs after the SQL ones
--                 (engine.stores.pii_rebind: PII re-sealed bound to its row, and each
--                 customer's registered card entered in customer_card).

CREATE TABLE request_nonce (
    channel_id  text NOT NULL,
    nonce       text NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, nonce)
);
CREATE INDEX request_nonce_seen ON request_nonce (seen_at);

CREATE FUNCTION record_request_nonces(p_outcome text[], p_channel_id text[], p_nonce text[])
RETURNS text[] LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_channel_id) IS DISTINCT FROM cardinality(p_outcome)
       OR cardinality(p_nonce) IS DISTINCT FROM cardinality(p_outcome) THEN
        RAISE EXCEPTION 'record_request_nonces: arrays of unequal length' USING ERRCODE = '22023';
    END IF;
    -- A nonce already recorded raises unique_violation: the whole call is undone.
    INSERT INTO request_nonce (channel_id, nonce)
    SELECT x.channel_id, x.nonce
    FROM unnest(p_outcome, p_channel_id, p_nonce) AS x(outcome, channel_id, nonce)
    WHERE x.outcome = 'booked' AND x.nonce IS NOT NULL
    ORDER BY x.channel_id, x.nonce;
    RETURN p_outcome;
END $$;

CREATE TABLE customer_card (
    customer_id  bigint NOT NULL REFERENCES customer (customer_id),
    card_index   bytea NOT NULL CHECK (length(card_index) = 32),
    card_masked  text NOT NULL,
    source       text NOT NULL CHECK (source IN ('registered', 'added')),
    channel_id   text,               -- NULL: registered before this migration
    idem_key     text,
    verified     boolean NOT NULL,   -- four-factor verified when bound
    bound_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, card_index)
);
CREATE TRIGGER customer_card_append_only BEFORE UPDATE OR DELETE ON customer_card
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE TABLE data_migration (
    name     text PRIMARY KEY,
    done_at  timestamptz NOT NULL DEFAULT now()
);
