-- Issue 19 (part A): operators, their sessions and the audit trail, in the control database.
--
-- operator          a person at the union or a member bank: login, argon2 password hash
--                   (engine.operators.passwords), roles (engine.operators.roles), status, and
--                   the failed-login count and lock that stop password guessing.
-- operator_session  a login's token, by its SHA-256 only (the token is shown once), with
--                   its expiry; logging out revokes it.
-- audit_log         every operator action and admin change, refused ones too: append-only
--                   (the trigger refuses UPDATE, DELETE and TRUNCATE) and hash-chained
--                   (engine.operators.audit; `python -m engine audit verify`).

CREATE TABLE operator (
    operator_id          text PRIMARY KEY CHECK (operator_id ~ '^op_[0-9a-f]{16}$'),
    tenant_id            text NOT NULL REFERENCES tenant (tenant_id),
    login                text NOT NULL UNIQUE CHECK (login ~ '^[a-z0-9][a-z0-9._-]{2,63}$'),
    password_hash        text NOT NULL,
    roles                text[] NOT NULL CHECK (
        cardinality(roles) BETWEEN 1 AND 5
        AND roles <@ ARRAY['union_admin', 'bank_admin', 'approver', 'officer', 'auditor']),
    status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    failed_logins        integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until         timestamptz,
    password_changed_at  timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_tenant ON operator (tenant_id);

CREATE TABLE operator_session (
    token_sha256  bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
    operator_id   text NOT NULL REFERENCES operator (operator_id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX operator_session_operator ON operator_session (operator_id) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    seq             bigint PRIMARY KEY CHECK (seq >= 1),
    at              timestamptz NOT NULL,
    operator_id     text NOT NULL,          -- '' when nobody was authenticated
    operator_login  text NOT NULL,
    tenant_id       text NOT NULL,          -- the operator's tenant ('' when unknown)
    action          text NOT NULL,
    target          text NOT NULL,
    before          jsonb,
    after           jsonb,
    outcome         text NOT NULL CHECK (outcome IN ('ok', 'refused')),
    code            text NOT NULL,          -- '' when ok; the problem's code when refused
    request_id      text NOT NULL,
    prev_hash       bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_operator ON audit_log (operator_id, seq);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
