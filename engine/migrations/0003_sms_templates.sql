-- SMS templates per tenant and kind. Placeholders in {braces}; a tenant without
-- its own template gets the one of tenant '*'.
CREATE TABLE sms_template (
    tenant_id   text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('drawdown', 'repayment')),
    body        text NOT NULL CHECK (length(body) <= 300),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind)
);
INSERT INTO sms_template (tenant_id, kind, body) VALUES
    ('*', 'drawdown', '您于{time}通过{channel}借款{amount}元，已发放至尾号{card_last4}的银行卡，借据号{receipt_no}。'),
    ('*', 'repayment', '您于{time}还款{amount}元（尾号{card_last4}的银行卡扣款），涉及借据：{receipt_nos}。');
