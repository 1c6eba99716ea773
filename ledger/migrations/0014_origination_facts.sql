-- What origination's safeguards read and record (issue 16):
--   the ID document's validity (rule id.expired: ID_EXPIRED), when the rules decided
--   (the system's own time, origination_system_seconds), and which member bank paid
--   for each bureau query (a report is reused only by the bank that queried it).

ALTER TABLE application ADD COLUMN id_valid_from date;
ALTER TABLE application ADD COLUMN id_valid_until date;      -- NULL: not given, or long-term
ALTER TABLE application ADD COLUMN id_long_term boolean NOT NULL DEFAULT false;
ALTER TABLE application ADD CONSTRAINT application_id_validity
    CHECK (NOT (id_long_term AND id_valid_until IS NOT NULL)
           AND (id_valid_until IS NULL OR id_valid_from IS NULL
                OR id_valid_until >= id_valid_from));

ALTER TABLE application ADD COLUMN decided_at timestamptz;
-- Applications decided before: the time of their `decided` step.
UPDATE application a
SET decided_at = (SELECT (s ->> 'at')::timestamptz FROM jsonb_array_elements(a.steps) AS s
                  WHERE s ->> 'step' = 'decided' LIMIT 1)
WHERE a.decision IS NOT NULL;

-- Each row is one query the bureau answered, paid by `tenant_id`'s member bank.
ALTER TABLE bureau_report ADD COLUMN tenant_id text;
ALTER TABLE bureau_report ADD COLUMN application_id bigint;
-- Reports fetched before: the application of the same person last received before the
-- report arrived is the one that asked for it (a report without one stays unassigned
-- and is not reused).
UPDATE bureau_report r
SET (tenant_id, application_id) = (
    SELECT a.tenant_id, a.application_id FROM application a
    WHERE a.id_number_index = r.id_number_index AND a.created_at <= r.fetched_at
    ORDER BY a.created_at DESC LIMIT 1);
CREATE INDEX bureau_report_by_tenant ON bureau_report (tenant_id, fetched_at);
