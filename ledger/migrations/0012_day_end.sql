-- The day-end batch (engine/eod) and accrual-basis income.
--
-- loan_plan.next_due_date  the due date of the oldest installment with principal or
--                          interest unpaid (NULL once all is paid), kept by PostgreSQL
--                          itself on every write of the plan: the day-end finds the
--                          loans due or overdue on a day through its index instead of
--                          opening every plan's arrays.
-- loan_accrual             per loan, the regular interest the day-end has posted to its
--                          receivable so far, and the interest prepayments settled
--                          (engine/eod/accrual.py); only loans that have any.
-- loan_risk                per loan ever overdue: days past due and its five-category
--                          classification as of the last day-end, and since when;
--                          loan_class_change keeps every change of class.
-- collection_case          loans handed to a loan officer (post-loan rules), with the
--                          round-robin cursor of each branch.
-- eod_progress             the checkpoint: per business date and step, the last key
--                          done (a loan, customer or outbox row, in order), written in
--                          the same transaction as that chunk's work.
--
-- Income is booked on the accrual basis from here on: the day-end posts each day's
-- interest (Dr loan_interest_receivable / Cr interest_income) and penalty and compound
-- interest (Dr loan_penalty_receivable / Cr penalty_income); a repayment credits the
-- receivables. Loans booked before (cash basis: income was posted when paid) start
-- with what they were paid counted as accrued and received, so nothing is booked
-- twice, and their unpaid charges are posted to the receivable by the first day-end
-- (`penalty_opening_fen`).

SET LOCAL lock_timeout = '5s';

-- The oldest due date with principal or interest unpaid, as the plan's own column.
CREATE FUNCTION plan_next_due(
    p_due date[], p_principal bigint[], p_interest bigint[], p_principal_paid bigint[],
    p_interest_paid bigint[]
) RETURNS date LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_due), 0) LOOP
        IF p_principal_paid[i] < p_principal[i] OR p_interest_paid[i] < p_interest[i] THEN
            RETURN p_due[i];
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

ALTER TABLE loan_plan ADD COLUMN next_due_date date GENERATED ALWAYS AS (
    plan_next_due(due_date, principal_fen, interest_fen, principal_paid_fen, interest_paid_fen)
) STORED;
CREATE INDEX loan_plan_next_due ON loan_plan (next_due_date) WHERE next_due_date IS NOT NULL;
-- The day-end's walk over the loans that accrue, in id order.
CREATE INDEX loan_disbursed ON loan (loan_id) WHERE status = 'disbursed';

-- Regular interest accrued through the end of p_on (ledger/accrual.py, to the fen):
-- whole installments due by then, and of the period running, round_half_up(I × t / T).
CREATE FUNCTION interest_accrued_fen(
    p_start date, p_due date[], p_interest bigint[], p_on date
) RETURNS bigint LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total bigint := 0;
    period_start date := p_start;
    period_days integer;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_due), 0) LOOP
        IF p_on >= p_due[i] THEN
            total := total + p_interest[i];
        ELSE
            IF p_on > period_start THEN
                period_days := p_due[i] - period_start;
                total := total
                    + (2 * p_interest[i] * (p_on - period_start) + period_days) / (2 * period_days);
            END IF;
            RETURN total;  -- later periods have not begun
        END IF;
        period_start := p_due[i];
    END LOOP;
    RETURN total;
END $$;

CREATE TABLE loan_accrual (
    loan_id               bigint PRIMARY KEY REFERENCES loan (loan_id),
    customer_id           bigint NOT NULL,
    interest_accrued_fen  bigint NOT NULL DEFAULT 0,  -- posted to the receivable so far
    interest_extra_fen    bigint NOT NULL DEFAULT 0 CHECK (interest_extra_fen >= 0),
    penalty_opening_fen   bigint NOT NULL DEFAULT 0 CHECK (penalty_opening_fen >= 0)
) WITH (fillfactor = 70);  -- rewritten by every day-end: room for HOT updates

-- Loans booked on the cash basis: what they were paid is accrued and received already.
INSERT INTO loan_accrual (loan_id, customer_id, interest_accrued_fen, interest_extra_fen,
                          penalty_opening_fen)
SELECT l.loan_id, l.customer_id,
       coalesce((SELECT sum(x) FROM unnest(p.interest_paid_fen) AS x), 0) + coalesce(pre.extra, 0),
       coalesce(pre.extra, 0),
       coalesce((SELECT sum(x) FROM unnest(p.penalty_unpaid_fen) AS x), 0)
       + coalesce((SELECT sum(x) FROM unnest(p.compound_unpaid_fen) AS x), 0)
FROM loan l
JOIN loan_plan p ON p.loan_id = l.loan_id
LEFT JOIN (SELECT i.loan_id, sum(i.interest_fen) AS extra
           FROM repayment_item i JOIN repayment r ON r.repayment_id = i.repayment_id
           WHERE i.mode = 'prepay' AND r.status = 'succeeded'
           GROUP BY i.loan_id) pre ON pre.loan_id = l.loan_id
WHERE l.status = 'disbursed'
  AND (EXISTS (SELECT 1 FROM unnest(p.interest_paid_fen) AS x WHERE x > 0)
       OR EXISTS (SELECT 1 FROM unnest(p.penalty_unpaid_fen) AS x WHERE x > 0)
       OR EXISTS (SELECT 1 FROM unnest(p.compound_unpaid_fen) AS x WHERE x > 0)
       OR pre.extra > 0);

-- Who froze a line: a channel may lift only its own freeze; a post-loan rule's or an
-- operator's is lifted by an operator.
ALTER TABLE credit_line ADD COLUMN frozen_by text
    CHECK (frozen_by IN ('channel', 'rule', 'operator'));
UPDATE credit_line SET frozen_by = 'channel' WHERE status = 'frozen';

-- The branch that serves a customer: the collection queue's officers are a branch's.
ALTER TABLE customer ADD COLUMN branch_code text NOT NULL DEFAULT 'main';

CREATE TABLE loan_risk (
    loan_id           bigint PRIMARY KEY REFERENCES loan (loan_id),
    customer_id       bigint NOT NULL,
    days_past_due     integer NOT NULL CHECK (days_past_due >= 0),
    classification    text NOT NULL CHECK (classification IN
                          ('normal', 'special_mention', 'substandard', 'doubtful', 'loss')),
    classified_on     date NOT NULL,  -- the day the loan entered its class
    as_of             date NOT NULL   -- the business date of the day-end that wrote it
);

CREATE TABLE loan_class_change (
    loan_id         bigint NOT NULL REFERENCES loan (loan_id),
    customer_id     bigint NOT NULL,
    business_date   date NOT NULL,
    from_class      text NOT NULL,
    to_class        text NOT NULL,
    days_past_due   integer NOT NULL,
    PRIMARY KEY (loan_id, business_date)
);

CREATE TABLE collection_case (
    loan_id        bigint PRIMARY KEY REFERENCES loan (loan_id),
    customer_id    bigint NOT NULL,
    tenant_id      text NOT NULL,
    branch_code    text NOT NULL,
    officer_id     text NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_on      date NOT NULL,
    dpd_at_open    integer NOT NULL,
    closed_on      date,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX collection_case_officer ON collection_case (officer_id, opened_on)
    WHERE status = 'open';

CREATE TABLE collection_cursor (
    tenant_id        text NOT NULL,
    branch_code      text NOT NULL,
    last_officer_id  text NOT NULL,
    PRIMARY KEY (tenant_id, branch_code)
);

CREATE TABLE eod_progress (
    business_date    date NOT NULL,
    step             text NOT NULL,
    last_key         bigint NOT NULL DEFAULT 0,
    rows_done        bigint NOT NULL DEFAULT 0,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (business_date, step)
);

-- The ledger's pair check, once per transaction whatever its number of legs. It fires
-- at commit for the transaction row and for every leg; until now each firing summed all
-- of the transaction's legs again, so a day-end posting of n legs cost n² reads. The
-- first firing sums them; when they are legs 1..n it notes "txn has n legs, checked"
-- for the rest of this database transaction, and a later firing for a leg numbered
-- 1..n skips. A leg added afterwards (in this transaction after SET CONSTRAINTS
-- IMMEDIATE, or in a later one) is numbered above n, the primary key being (txn, leg):
-- it sums them all again.
CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    checked    text := coalesce(current_setting('ledger.balanced_txns', true), '');
    mark       text := ',' || NEW.txn_id || '#';
    at         integer := strpos(checked, mark);
    total      bigint;
    legs       integer;
    first_leg  integer;
    last_leg   integer;
BEGIN
    IF at > 0 THEN
        IF TG_TABLE_NAME = 'ledger_txn' THEN
            RETURN NULL;
        END IF;
        IF NEW.leg_no BETWEEN 1 AND split_part(substr(checked, at + length(mark)), ',', 1)::integer
        THEN
            RETURN NULL;
        END IF;
    END IF;
    SELECT coalesce(sum(amount_fen), 0), count(*), min(leg_no), max(leg_no)
    INTO total, legs, first_leg, last_leg
    FROM ledger_leg WHERE txn_id = NEW.txn_id;
    IF total <> 0 OR legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: % legs summing to % fen',
            NEW.txn_id, legs, total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_balanced';
    END IF;
    IF first_leg = 1 AND last_leg = legs THEN
        PERFORM set_config('ledger.balanced_txns', checked || mark || legs || ',', true);
    END IF;
    RETURN NULL;
END $$;
