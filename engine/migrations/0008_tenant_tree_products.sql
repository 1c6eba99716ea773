-- Issue 19 (part B): the tenant tree, two-level products, regional lending.
--
-- tenant            two levels: the province union (kind 'union', no parent) and its
--                   member banks (kind 'member_bank', parent = the union); a member bank
--                   registers the region codes it may lend to online (the 2021 notice on
--                   internet lending by local banks): 2, 4 or 6 leading digits of the
--                   administrative area code (the ID number's first six digits).
-- product_template  the union's products: what a member bank may offer, as ranges.
-- product           a member bank's adoption of a template, with its own values inside
--                   the template's ranges; `version` moves with every change, and each
--                   version's terms are kept in product_version (a credit line keeps the
--                   version it was granted under: credit_line.product_version, shards).
--                   `status` paused: no new lines or drawdowns; loans keep servicing.

ALTER TABLE tenant ADD COLUMN kind text NOT NULL DEFAULT 'member_bank'
    CHECK (kind IN ('union', 'member_bank'));
ALTER TABLE tenant ADD COLUMN parent_id text REFERENCES tenant (tenant_id);
ALTER TABLE tenant ADD COLUMN region_codes text[] NOT NULL DEFAULT '{}'
    CHECK (array_to_string(region_codes, ',') ~ '^([0-9]{2}|[0-9]{4}|[0-9]{6})?(,([0-9]{2}|[0-9]{4}|[0-9]{6}))*$');
ALTER TABLE tenant ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- The province union, above every tenant there is.
INSERT INTO tenant (tenant_id, name, kind) VALUES ('union', '省农村信用社联合社', 'union')
ON CONFLICT (tenant_id) DO UPDATE SET kind = 'union';
UPDATE tenant SET parent_id = 'union' WHERE kind = 'member_bank' AND parent_id IS NULL;
ALTER TABLE tenant ADD CONSTRAINT tenant_tree CHECK ((kind = 'union') = (parent_id IS NULL));

-- Two levels, no deeper: a member bank's parent is a union, and a tenant with member
-- banks stays a union. A member bank written without a parent belongs to the union.
CREATE FUNCTION tenant_two_levels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'member_bank' AND NEW.parent_id IS NULL THEN
        NEW.parent_id := (SELECT tenant_id FROM tenant WHERE kind = 'union'
                          ORDER BY tenant_id LIMIT 1);
    END IF;
    IF NEW.parent_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM tenant WHERE tenant_id = NEW.parent_id AND kind = 'union'
    ) THEN
        RAISE EXCEPTION 'tenant %: the parent % is not a union', NEW.tenant_id, NEW.parent_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_two_levels';
    END IF;
    IF NEW.kind <> 'union' AND EXISTS (SELECT 1 FROM tenant WHERE parent_id = NEW.tenant_id) THEN
        RAISE EXCEPTION 'tenant % has member banks: it stays a union', NEW.tenant_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenant_two_levels';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tenant_two_levels BEFORE INSERT OR UPDATE ON tenant
    FOR EACH ROW EXECUTE FUNCTION tenant_two_levels();

CREATE TABLE product_template (
    template_code                text PRIMARY KEY CHECK (template_code ~ '^[a-z0-9][a-z0-9-]{0,47}$'),
    name                         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    -- consumer loans: at most 60 months (the regulator's five years), checked here too.
    loan_kind                    text NOT NULL CHECK (loan_kind IN ('consumer', 'business')),
    repayment_methods            text[] NOT NULL CHECK (cardinality(repayment_methods) >= 1),
    term_months_min              integer NOT NULL CHECK (term_months_min >= 1),
    term_months_max              integer NOT NULL CHECK (term_months_max >= term_months_min),
    bullet_term_months_max       integer NOT NULL CHECK (bullet_term_months_max BETWEEN 1 AND 12),
    grace_months_max             integer NOT NULL DEFAULT 0 CHECK (grace_months_max >= 0),
    line_limit_min_fen           bigint NOT NULL CHECK (line_limit_min_fen > 0),
    line_limit_max_fen           bigint NOT NULL CHECK (line_limit_max_fen >= line_limit_min_fen),
    annual_rate_pct_floor        numeric(9, 6) NOT NULL CHECK (annual_rate_pct_floor >= 0),
    annual_rate_pct_cap          numeric(9, 6) NOT NULL CHECK (annual_rate_pct_cap >= annual_rate_pct_floor),
    penalty_multiplier_min       numeric(6, 4) NOT NULL CHECK (penalty_multiplier_min >= 1.3),
    penalty_multiplier_max       numeric(6, 4) NOT NULL
        CHECK (penalty_multiplier_max BETWEEN penalty_multiplier_min AND 1.5),
    prepay_rules                 text[] NOT NULL CHECK (cardinality(prepay_rules) >= 1),
    customer_cap_group           text,
    customer_outstanding_max_fen bigint CHECK (customer_outstanding_max_fen > 0),
    -- Where a customer's region comes from, by default, for the adoptions.
    region_source                text NOT NULL DEFAULT 'id_number'
        CHECK (region_source IN ('id_number', 'residence')),
    version                      integer NOT NULL DEFAULT 1,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    CHECK ((customer_cap_group IS NULL) = (customer_outstanding_max_fen IS NULL)),
    CONSTRAINT consumer_term_regulatory_max CHECK (loan_kind <> 'consumer' OR term_months_max <= 60)
);

ALTER TABLE product ADD COLUMN template_code text REFERENCES product_template (template_code);
ALTER TABLE product ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE product ADD COLUMN status text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'paused'));
ALTER TABLE product ADD COLUMN status_reason text;
ALTER TABLE product ADD COLUMN region_source text NOT NULL DEFAULT 'id_number'
    CHECK (region_source IN ('id_number', 'residence'));
ALTER TABLE product ADD COLUMN loan_kind text NOT NULL DEFAULT 'business'
    CHECK (loan_kind IN ('consumer', 'business'));

-- Every version's terms, as the reference cache reads them (engine.stores.reference).
CREATE TABLE product_version (
    product_code  text NOT NULL REFERENCES product (product_code),
    version       integer NOT NULL CHECK (version >= 1),
    terms         jsonb NOT NULL,
    changed_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_code, version)
);

-- The products that exist become adoptions of a template of their own values (the
-- union's ranges are what the bank offers now), version 1 of each kept as it is.
UPDATE product SET loan_kind = 'consumer'
WHERE customer_cap_group = 'internet_consumer' OR product_code LIKE '%consumer%';
INSERT INTO product_template (template_code, name, loan_kind, repayment_methods,
    term_months_min, term_months_max, bullet_term_months_max, grace_months_max,
    line_limit_min_fen, line_limit_max_fen, annual_rate_pct_floor, annual_rate_pct_cap,
    penalty_multiplier_min, penalty_multiplier_max, prepay_rules, customer_cap_group,
    customer_outstanding_max_fen)
SELECT product_code, left(name, 64), loan_kind, repayment_methods,
    term_months_min, LEAST(term_months_max, CASE WHEN loan_kind = 'consumer' THEN 60 ELSE term_months_max END),
    bullet_term_months_max, grace_months_max,
    1, line_limit_max_fen, annual_rate_pct_min, annual_rate_pct_max,
    penalty_multiplier, penalty_multiplier, ARRAY[prepay_rule_default], customer_cap_group,
    customer_outstanding_max_fen
FROM product
ON CONFLICT (template_code) DO NOTHING;
UPDATE product SET template_code = product_code WHERE template_code IS NULL;
ALTER TABLE product ALTER COLUMN template_code SET NOT NULL;
INSERT INTO product_version (product_code, version, terms, changed_by)
SELECT product_code, version, to_jsonb(product) - 'updated_at', 'migration' FROM product
ON CONFLICT DO NOTHING;
