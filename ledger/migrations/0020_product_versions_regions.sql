-- Issue 19 (part B), each shard.
--
-- credit_line.product_version  the version of its product the line was granted under: its
--     drawdowns use that version's terms (engine.stores.reference, product_version in
--     the control database). Lines granted before were granted under version 1.
-- customer.id_region, residence_region  the customer's region for the member bank's
--     regional rule: the ID number's area code (its first six digits, kept in clear as
--     the masked number shows them already) and the declared residence's area code.
--     Customers registered before get id_region from migrate's data step
--     customer_regions (engine.stores.customer_regions: it needs the PII keys).
-- application.business_date  the business date it was received on (the daily report);
--     residence_region as declared; manual_review_requested_at: an automatic refusal
--     sent to an officer at the applicant's request.

ALTER TABLE credit_line ADD COLUMN product_version integer NOT NULL DEFAULT 1
    CHECK (product_version >= 1);
ALTER TABLE customer ADD COLUMN id_region text CHECK (id_region ~ '^[0-9]{6}$');
ALTER TABLE customer ADD COLUMN residence_region text CHECK (residence_region ~ '^[0-9]{6}$');
ALTER TABLE application ADD COLUMN business_date date;
ALTER TABLE application ADD COLUMN residence_region text CHECK (residence_region ~ '^[0-9]{6}$');
ALTER TABLE application ADD COLUMN manual_review_requested_at timestamptz;
CREATE INDEX application_business_date ON application (business_date);
CREATE INDEX ledger_txn_business_date ON ledger_txn (business_date, kind);
