-- The double-entry ledger of one shard.
--
-- ledger_chart    the chart of accounts (mirrors ledger/chart.py; seeded by `engine migrate`)
-- ledger_account  one row per loan account, INTERNAL_STRIPES rows per internal account,
--                 with running debit and credit totals kept by every posting
-- ledger_txn      one row per posting (append-only)
-- ledger_leg      its legs: amount_fen > 0 debit, < 0 credit (append-only)
--
-- Pair check: a deferred constraint trigger refuses, at commit, any transaction
-- whose legs do not sum to zero or number fewer than two, however the legs
-- were written. Corrections are reversing postings; UPDATE and DELETE are refused.

CREATE TABLE ledger_chart (
    code        text PRIMARY KEY,
    name_zh     text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('asset', 'liability', 'income', 'expense')),
    scope       text NOT NULL CHECK (scope IN ('loan', 'internal'))
);

CREATE TABLE ledger_account (
    code              text NOT NULL REFERENCES ledger_chart (code),
    owner_id          bigint NOT NULL,   -- loan ID (loan scope) or stripe number (internal)
    customer_id       bigint,            -- NULL for internal accounts
    debit_total_fen   bigint NOT NULL DEFAULT 0 CHECK (debit_total_fen >= 0),
    credit_total_fen  bigint NOT NULL DEFAULT 0 CHECK (credit_total_fen >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code, owner_id)
);

CREATE TABLE ledger_txn (
    txn_id          bigint PRIMARY KEY,
    customer_id     bigint,
    kind            text NOT NULL,
    ref_id          bigint,
    business_date   date NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_txn_ref ON ledger_txn (ref_id) WHERE ref_id IS NOT NULL;

CREATE TABLE ledger_leg (
    txn_id       bigint NOT NULL REFERENCES ledger_txn (txn_id),
    leg_no       smallint NOT NULL,
    code         text NOT NULL,
    owner_id     bigint NOT NULL,
    customer_id  bigint,
    amount_fen   bigint NOT NULL CHECK (amount_fen <> 0),
    PRIMARY KEY (txn_id, leg_no),
    FOREIGN KEY (code, owner_id) REFERENCES ledger_account (code, owner_id)
);
CREATE INDEX ledger_leg_account ON ledger_leg (code, owner_id);

CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    legs  integer;
BEGIN
    SELECT coalesce(sum(amount_fen), 0), count(*) INTO total, legs
    FROM ledger_leg WHERE txn_id = NEW.txn_id;
    IF total <> 0 OR legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: % legs summing to % fen',
            NEW.txn_id, legs, total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_balanced';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_txn_balanced AFTER INSERT ON ledger_txn
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();
CREATE CONSTRAINT TRIGGER ledger_leg_balanced AFTER INSERT ON ledger_leg
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused (post a reversal instead)',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER ledger_txn_append_only BEFORE UPDATE OR DELETE ON ledger_txn
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_leg_append_only BEFORE UPDATE OR DELETE ON ledger_leg
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_txn_no_truncate BEFORE TRUNCATE ON ledger_txn
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_leg_no_truncate BEFORE TRUNCATE ON ledger_leg
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
