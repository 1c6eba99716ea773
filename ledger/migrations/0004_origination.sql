-- Origination: applications, white and black lists, bureau reports, e-contracts
-- and their evidence chain, all on the applicant's shard (routed by ID number).

CREATE TABLE whitelist_entry (
    tenant_id          text NOT NULL,
    id_number_index    bytea NOT NULL,
    limit_fen          bigint NOT NULL CHECK (limit_fen > 0),
    annual_rate_pct    numeric(9, 6) NOT NULL CHECK (annual_rate_pct >= 0),
    repayment_methods  text[] NOT NULL,
    max_term_months    integer NOT NULL CHECK (max_term_months >= 1),
    imported_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id_number_index)
);

CREATE TABLE blacklist_entry (
    tenant_id        text NOT NULL,           -- '*' for every tenant
    id_number_index  bytea NOT NULL,
    reason           text NOT NULL,
    listed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id_number_index)
);

-- A parsed report is kept per person and reused while valid: one bureau query
-- serves every application inside the window.
CREATE TABLE bureau_report (
    id_number_index  bytea NOT NULL,
    fetched_at       timestamptz NOT NULL DEFAULT now(),
    valid_until      timestamptz NOT NULL,
    indicators       jsonb NOT NULL,
    PRIMARY KEY (id_number_index, fetched_at)
);

CREATE TABLE application (
    application_id        bigint PRIMARY KEY,
    tenant_id             text NOT NULL,
    channel_id            text NOT NULL,
    channel_serial        text NOT NULL,
    product_code          text NOT NULL,
    id_number_index       bytea NOT NULL,
    applicant_ciphertext  bytea NOT NULL,      -- name, ID number, phone, card (JSON, AES-GCM)
    customer_id           bigint,
    requested_amount_fen  bigint NOT NULL CHECK (requested_amount_fen > 0),
    requested_term_months integer NOT NULL,
    repayment_method      text NOT NULL,
    terms_version         text NOT NULL,
    attachments           text[] NOT NULL DEFAULT '{}',
    status                text NOT NULL
        CHECK (status IN ('received', 'pending_bureau', 'pending_review', 'approved', 'refused')),
    decision              jsonb,
    reasons               text[] NOT NULL DEFAULT '{}',
    rule_set_version      text,
    credit_line_id        bigint,
    contract_id           bigint,
    steps                 jsonb NOT NULL DEFAULT '[]',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, channel_serial)
);
CREATE INDEX application_review ON application (created_at) WHERE status = 'pending_review';

CREATE TABLE contract (
    contract_id      bigint NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('loan_contract', 'credit_authorization')),
    customer_id      bigint NOT NULL,
    application_id   bigint NOT NULL REFERENCES application (application_id),
    credit_line_id   bigint NOT NULL,
    document         text NOT NULL,
    document_sha256  bytea NOT NULL,
    signed_at        timestamptz,
    evidence_seq     bigint,
    PRIMARY KEY (contract_id, kind)
);

-- Append-only hash chain per shard: each entry holds the previous entry's hash.
CREATE TABLE evidence_entry (
    seq              bigint PRIMARY KEY,
    contract_id      bigint NOT NULL,
    kind             text NOT NULL,
    document_sha256  bytea NOT NULL,
    signed_at        timestamptz NOT NULL,
    prev_hash        bytea NOT NULL,
    entry_hash       bytea NOT NULL
);
CREATE TRIGGER evidence_append_only BEFORE UPDATE OR DELETE ON evidence_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

ALTER TABLE credit_line ADD COLUMN application_id bigint;
ALTER TABLE credit_line ADD COLUMN contract_signed_at timestamptz;

ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check
    CHECK (kind IN ('disburse', 'debit', 'sms', 'bureau'));
