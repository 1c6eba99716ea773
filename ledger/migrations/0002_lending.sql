-- Customers, credit lines, loans, installment plans, repayments and idempotency
-- records of one shard. Every table carries customer_id (the shard key), so the
-- schema can also run distributed by customer.

CREATE TABLE customer (
    customer_id          bigint PRIMARY KEY,
    tenant_id            text NOT NULL,
    name_ciphertext      bytea NOT NULL,
    id_number_ciphertext bytea NOT NULL,
    id_number_index      bytea NOT NULL,
    phone_ciphertext     bytea NOT NULL,
    bank_card_ciphertext bytea NOT NULL,
    id_number_masked     text NOT NULL,
    phone_masked         text NOT NULL,
    bank_card_masked     text NOT NULL,
    birth_date           date NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id_number_index)
);

CREATE TABLE credit_line (
    credit_line_id     bigint PRIMARY KEY,
    customer_id        bigint NOT NULL REFERENCES customer (customer_id),
    tenant_id          text NOT NULL,
    product_code       text NOT NULL,
    limit_fen          bigint NOT NULL CHECK (limit_fen > 0),
    used_fen           bigint NOT NULL DEFAULT 0 CHECK (used_fen >= 0),
    annual_rate_pct    numeric(9, 6) NOT NULL CHECK (annual_rate_pct >= 0),
    repayment_methods  text[] NOT NULL,
    max_term_months    integer NOT NULL CHECK (max_term_months >= 1),
    expires_on         date NOT NULL,
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    status_reason      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- Guarantee 2, in the database as well as in the code: never overdrawn.
    CONSTRAINT credit_line_not_overdrawn CHECK (used_fen <= limit_fen)
);
CREATE INDEX credit_line_customer ON credit_line (customer_id);

CREATE TABLE loan (
    loan_id                    bigint PRIMARY KEY,
    customer_id                bigint NOT NULL REFERENCES customer (customer_id),
    credit_line_id             bigint NOT NULL REFERENCES credit_line (credit_line_id),
    tenant_id                  text NOT NULL,
    channel_id                 text NOT NULL,
    product_code               text NOT NULL,
    customer_cap_group         text,
    receipt_no                 text NOT NULL UNIQUE,
    principal_fen              bigint NOT NULL CHECK (principal_fen > 0),
    outstanding_principal_fen  bigint NOT NULL CHECK (outstanding_principal_fen >= 0),
    annual_rate_pct            numeric(9, 6) NOT NULL,
    penalty_multiplier         numeric(6, 4) NOT NULL,
    repayment_method           text NOT NULL,
    term_months                integer NOT NULL,
    grace_months               integer NOT NULL DEFAULT 0,
    start_date                 date NOT NULL,
    maturity_date              date NOT NULL,
    status                     text NOT NULL
        CHECK (status IN ('disbursing', 'disbursed', 'failed', 'settled')),
    disburse_to_ciphertext     bytea NOT NULL,
    disburse_to_masked         text NOT NULL,
    -- The plan's level amount and the principal repaid outside it (ledger.schedule.Plan).
    payment_fen                bigint NOT NULL CHECK (payment_fen >= 0),
    prepaid_fen                bigint NOT NULL DEFAULT 0 CHECK (prepaid_fen >= 0),
    plan_version               integer NOT NULL DEFAULT 1,
    requested_at               timestamptz NOT NULL,
    disbursed_at               timestamptz,
    settled_at                 timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CHECK (outstanding_principal_fen <= principal_fen)
);
CREATE INDEX loan_customer ON loan (customer_id);

CREATE TABLE installment (
    loan_id             bigint NOT NULL REFERENCES loan (loan_id),
    seq                 smallint NOT NULL CHECK (seq >= 1),
    customer_id         bigint NOT NULL,
    due_date            date NOT NULL,
    principal_fen       bigint NOT NULL CHECK (principal_fen >= 0),
    interest_fen        bigint NOT NULL CHECK (interest_fen >= 0),
    balance_after_fen   bigint NOT NULL CHECK (balance_after_fen >= 0),
    principal_paid_fen  bigint NOT NULL DEFAULT 0,
    interest_paid_fen   bigint NOT NULL DEFAULT 0,
    -- Penalty (on overdue principal) and compound interest (on overdue interest)
    -- booked through `accrued_through` and not yet paid; what was paid of them.
    penalty_unpaid_fen  bigint NOT NULL DEFAULT 0 CHECK (penalty_unpaid_fen >= 0),
    compound_unpaid_fen bigint NOT NULL DEFAULT 0 CHECK (compound_unpaid_fen >= 0),
    accrued_through     date,
    penalty_paid_fen    bigint NOT NULL DEFAULT 0 CHECK (penalty_paid_fen >= 0),
    PRIMARY KEY (loan_id, seq),
    CHECK (principal_paid_fen BETWEEN 0 AND principal_fen),
    CHECK (interest_paid_fen BETWEEN 0 AND interest_fen)
);

CREATE TABLE repayment (
    repayment_id    bigint PRIMARY KEY,
    customer_id     bigint NOT NULL REFERENCES customer (customer_id),
    tenant_id       text NOT NULL,
    channel_id      text NOT NULL,
    status          text NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    total_fen       bigint NOT NULL CHECK (total_fen > 0),
    debit_from_masked text NOT NULL,
    business_date   date NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX repayment_customer ON repayment (customer_id);

CREATE TABLE repayment_item (
    repayment_id   bigint NOT NULL REFERENCES repayment (repayment_id),
    loan_id        bigint NOT NULL REFERENCES loan (loan_id),
    customer_id    bigint NOT NULL,
    mode           text NOT NULL CHECK (mode IN ('due', 'prepay', 'payoff')),
    prepay_rule    text,
    amount_fen     bigint NOT NULL CHECK (amount_fen > 0),
    penalty_fen    bigint NOT NULL DEFAULT 0,
    interest_fen   bigint NOT NULL DEFAULT 0,
    principal_fen  bigint NOT NULL DEFAULT 0,
    CHECK (penalty_fen + interest_fen + principal_fen = amount_fen),
    PRIMARY KEY (repayment_id, loan_id)
);

-- The durable idempotency record, written in the same transaction as the money.
CREATE TABLE idempotency_record (
    channel_id      text NOT NULL,
    idem_key        text NOT NULL,
    customer_id     bigint,
    request_sha256  bytea NOT NULL,
    status_code     smallint NOT NULL,
    response_body   bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, idem_key)
);
CREATE INDEX idempotency_record_created ON idempotency_record (created_at);
