-- Channels (with their encrypted secrets) and products (with the regulator's caps as data).

CREATE TABLE channel (
    channel_id         text PRIMARY KEY CHECK (channel_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    tenant_id          text NOT NULL REFERENCES tenant (tenant_id),
    secret_ciphertext  bytea NOT NULL,
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    status_reason      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE product (
    product_code                 text PRIMARY KEY CHECK (product_code ~ '^[a-z0-9][a-z0-9-]{0,47}$'),
    tenant_id                    text NOT NULL REFERENCES tenant (tenant_id),
    name                         text NOT NULL,
    repayment_methods            text[] NOT NULL,
    term_months_min              integer NOT NULL CHECK (term_months_min >= 1),
    term_months_max              integer NOT NULL CHECK (term_months_max >= term_months_min),
    -- The 2020 internet-loan rules: no bullet loan longer than 12 months, for any product.
    bullet_term_months_max       integer NOT NULL CHECK (bullet_term_months_max BETWEEN 1 AND 12),
    grace_months_max             integer NOT NULL DEFAULT 0 CHECK (grace_months_max >= 0),
    line_limit_max_fen           bigint NOT NULL CHECK (line_limit_max_fen > 0),
    -- Outstanding principal one customer may hold across all lines of products in the group.
    customer_cap_group           text,
    customer_outstanding_max_fen bigint CHECK (customer_outstanding_max_fen > 0),
    annual_rate_pct_min          numeric(9, 6) NOT NULL CHECK (annual_rate_pct_min >= 0),
    annual_rate_pct_max          numeric(9, 6) NOT NULL CHECK (annual_rate_pct_max >= annual_rate_pct_min),
    penalty_multiplier           numeric(6, 4) NOT NULL DEFAULT 1.5 CHECK (penalty_multiplier BETWEEN 1.3 AND 1.5),
    prepay_rule_default          text NOT NULL DEFAULT 'reduce_nearest',
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    CHECK ((customer_cap_group IS NULL) = (customer_outstanding_max_fen IS NULL))
);
