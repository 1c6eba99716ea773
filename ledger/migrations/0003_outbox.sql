-- The outbox: every instruction to a system we do not own (pay a card, debit a
-- card, send an SMS) is a row written in the same transaction as the business
-- change; `engine relay` carries it out.
--
--   pending ──claim──► sending ──answer──► done | failed
--      ▲                  │ time-out, unclear answer, lease expired (relay died)
--      │ never reached    ▼
--      └─────────────── unknown ──inquiry──► done | failed   (never sent again)

CREATE TABLE outbox (
    outbox_id        bigint PRIMARY KEY,
    customer_id      bigint NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('disburse', 'debit', 'sms')),
    ref_id           bigint NOT NULL,        -- the loan, the repayment, or the message's cause
    amount_fen       bigint CHECK (amount_fen > 0),
    payload          jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sending', 'unknown', 'done', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    last_sent_at    timestamptz,
    outcome          text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz
);
CREATE INDEX outbox_ready ON outbox (next_attempt_at) WHERE state IN ('pending', 'sending', 'unknown');
CREATE INDEX outbox_ref ON outbox (ref_id);

-- Two-phase repayments: the card is debited before the repayment is booked.
ALTER TABLE repayment ADD COLUMN failure_reason text;
ALTER TABLE repayment ADD COLUMN request_items jsonb;
ALTER TABLE repayment ADD COLUMN channel_key text;     -- idempotency key, to update the stored answer
ALTER TABLE repayment ADD COLUMN completed_at timestamptz;
ALTER TABLE loan ADD COLUMN pending_repayment_id bigint;
ALTER TABLE loan ADD COLUMN failure_reason text;
ALTER TABLE repayment ADD COLUMN debit_from_ciphertext bytea;
