-- Issue 18: an operator's lift of a post-loan rule's freeze holds until the cure.
--
-- The rule `freeze_lines` freezes a late customer's active lines at every day-end. An
-- operator who lifted the freeze while the customer was still late (a repayment plan
-- agreed with the officer, say) saw it back the next morning. An operator's unfreeze
-- now waives the rule for that line; the rule passes waived lines over; the cure step
-- ends the waiver once none of the customer's loans is late, so a later delinquency
-- freezes the line again. An operator's freeze ends it too. A constant default: the
-- column is added without rewriting the table.
ALTER TABLE credit_line ADD COLUMN rule_freeze_waived boolean NOT NULL DEFAULT false;
