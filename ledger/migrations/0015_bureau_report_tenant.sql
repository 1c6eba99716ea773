-- Issue 21: a bureau report is reused only by the member bank (tenant) that pulled it,
-- under its own applicant's consent; another bank's application queries again.
-- (Issue 16 adds the same column with the same backfill, and more: whichever lands
-- second keeps only what the first lacks.)

ALTER TABLE bureau_report ADD COLUMN IF NOT EXISTS tenant_id text;
-- Reports fetched before: the bank of the application of the same person received last
-- before the report arrived (one found nowhere stays NULL, and is never reused).
UPDATE bureau_report r
SET tenant_id = (
    SELECT a.tenant_id FROM application a
    WHERE a.id_number_index = r.id_number_index AND a.created_at <= r.fetched_at
    ORDER BY a.created_at DESC LIMIT 1)
WHERE r.tenant_id IS NULL;
