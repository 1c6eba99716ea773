-- Which prepayment rules (a repayment item's `prepay_rule`, API.md) a member bank's
-- product allows. Part of every version's terms (product_version.terms, written by
-- engine.stores.product_admin), so a loan keeps the rules of the version its line was
-- granted under (credit_line.product_version); a prepayment with another rule is
-- `422 PREPAY_RULE_NOT_ALLOWED`. Existing products allow every rule, as they did; the
-- terms of versions written before this have no `prepay_rules` and are read as every
-- rule too (engine.stores.reference.Product). Sorted, as templates keep theirs.

ALTER TABLE product ADD COLUMN prepay_rules text[] NOT NULL
    DEFAULT '{reduce_amount,reduce_nearest,reduce_term}'
    CHECK (cardinality(prepay_rules) >= 1
           AND prepay_rules <@ '{reduce_amount,reduce_nearest,reduce_term}'::text[]);
ALTER TABLE product ADD CONSTRAINT product_prepay_rule_default_allowed
    CHECK (prepay_rule_default = ANY (prepay_rules));
