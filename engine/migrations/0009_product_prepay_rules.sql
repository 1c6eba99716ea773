-- Which prepayment rules (a repayment item's `prepay_rule`, API.md) a member bank's
-- product allows. Part of every version's terms (product_version.terms, written by
-- engine.stores.product_admin), so a loan keeps the rules of the version its line was
-- granted under (credit_line.product_version); a prepayment with another rule is
-- `422 PREPAY_RULE_NOT_ALLOWED`. Existing products allow every rule, as they did; the
-- terms of versions written before this have no `prepay_rules` and are read as every
-- rule too (engine.stores.reference.Product). Sorted, as templates keep theirs.

-- The API has always refused any other default, but the column never checked it: a row
-- written by hand stops the deploy here, by name, rather than at the constraint below.
DO $$
DECLARE odd text;
BEGIN
    SELECT string_agg(product_code || '=' || prepay_rule_default, ', ') INTO odd FROM product
    WHERE prepay_rule_default NOT IN ('reduce_amount', 'reduce_nearest', 'reduce_term');
    IF odd IS NOT NULL THEN
        RAISE EXCEPTION 'products with an unknown prepay_rule_default: %', odd
            USING HINT = 'set each to reduce_amount, reduce_nearest or reduce_term, then migrate';
    END IF;
END $$;

ALTER TABLE product ADD COLUMN prepay_rules text[] NOT NULL
    DEFAULT '{reduce_amount,reduce_nearest,reduce_term}'
    CHECK (cardinality(prepay_rules) >= 1
           AND prepay_rules <@ '{reduce_amount,reduce_nearest,reduce_term}'::text[]);
ALTER TABLE product ADD CONSTRAINT product_prepay_rule_default_allowed
    CHECK (prepay_rule_default = ANY (prepay_rules));
