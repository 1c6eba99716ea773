-- Every customer SMS names the channel by the name the customer knows and the time
-- (the call's requirement): channels get a display name, the repayment template
-- gains {channel}, and the contract's one-time code has a template of its own.

-- Existing channels are named by their ID until `channels rename` gives them a name.
ALTER TABLE channel ADD COLUMN display_name text;
UPDATE channel SET display_name = channel_id WHERE display_name IS NULL;
ALTER TABLE channel ALTER COLUMN display_name SET NOT NULL;
ALTER TABLE channel ADD CONSTRAINT channel_display_name_length
    CHECK (char_length(display_name) BETWEEN 1 AND 32);

ALTER TABLE sms_template DROP CONSTRAINT sms_template_kind_check;
ALTER TABLE sms_template ADD CONSTRAINT sms_template_kind_check
    CHECK (kind IN ('drawdown', 'repayment', 'reminder', 'contract_otp'));

-- Only the province-wide default, and only if nobody has edited it.
UPDATE sms_template
SET body = '您于{time}通过{channel}还款{amount}元（尾号{card_last4}的银行卡扣款），涉及借据：{receipt_nos}。',
    updated_at = now()
WHERE tenant_id = '*' AND kind = 'repayment'
  AND body = '您于{time}还款{amount}元（尾号{card_last4}的银行卡扣款），涉及借据：{receipt_nos}。';

INSERT INTO sms_template (tenant_id, kind, body) VALUES
    ('*', 'contract_otp',
     '您于{time}通过{channel}签署借款合同（编号{contract_id}），验证码{code}，{minutes}分钟内有效。请勿将验证码告诉任何人。')
ON CONFLICT (tenant_id, kind) DO NOTHING;

-- New and edited templates must name the channel and the time. NOT VALID: a tenant's
-- existing template is left as it is (the engine fills {channel} wherever it appears).
ALTER TABLE sms_template ADD CONSTRAINT sms_template_names_channel_and_time
    CHECK (position('{channel}' IN body) > 0 AND position('{time}' IN body) > 0) NOT VALID;
