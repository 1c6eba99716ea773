-- The day-end batch (engine/eod) in the control database.
--
-- eod_day       each business date the day-end has closed: when the business date moved
--               past it (the cut-over) and when every shard had finished its steps.
-- loan_officer  the loan officers a post-loan rule may hand a loan to (collection
--               queue), by member bank and branch, taken in turn.
-- A reminder SMS template, sent by the day-end a few days before a due date.

CREATE TABLE eod_day (
    business_date  date PRIMARY KEY,
    cut_over_at    timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);

CREATE TABLE loan_officer (
    officer_id   text PRIMARY KEY CHECK (officer_id ~ '^[A-Za-z0-9_-]{1,32}$'),
    tenant_id    text NOT NULL REFERENCES tenant (tenant_id),
    branch_code  text NOT NULL CHECK (branch_code ~ '^[A-Za-z0-9_-]{1,32}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX loan_officer_branch ON loan_officer (tenant_id, branch_code) WHERE active;

ALTER TABLE sms_template DROP CONSTRAINT sms_template_kind_check;
ALTER TABLE sms_template ADD CONSTRAINT sms_template_kind_check
    CHECK (kind IN ('drawdown', 'repayment', 'reminder'));
INSERT INTO sms_template (tenant_id, kind, body) VALUES
    ('*', 'reminder', '温馨提示：{due_date}将从您尾号{card_last4}的银行卡扣还贷款{amount}元，涉及借据：{receipt_nos}，请保持余额充足。');
