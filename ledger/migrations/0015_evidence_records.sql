-- Evidence beyond the contract's two documents, each a document of its own whose
-- SHA-256 is an entry of the shard's hash chain (evidence_entry, migration 0004):
--   credit_query_consent  the applicant's authorization of the bureau query (what, when,
--                         which channel, a digest of the text shown), before the query
--   face_to_face          the officer's record of the in-person signing (面签)
--   signature             who signed: the contract's digests, the one-time code's issue
--                         and check, the signer's IP and device
-- For these entries evidence_entry.contract_id holds the subject: the application
-- (consent) or the contract.
CREATE TABLE evidence_record (
    evidence_seq     bigint PRIMARY KEY REFERENCES evidence_entry (seq),
    subject_id       bigint NOT NULL,
    kind             text NOT NULL
        CHECK (kind IN ('credit_query_consent', 'face_to_face', 'signature')),
    document         text NOT NULL,
    document_sha256  bytea NOT NULL,
    recorded_at      timestamptz NOT NULL
);
CREATE INDEX evidence_record_subject ON evidence_record (subject_id);
CREATE TRIGGER evidence_record_append_only BEFORE UPDATE OR DELETE ON evidence_record
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

-- 面签: a contract the rule set marked is signed online only after an officer recorded
-- meeting the customer (officer, place, time).
CREATE TABLE contract_face_to_face (
    contract_id   bigint PRIMARY KEY,
    reasons       text[] NOT NULL,       -- the rule codes that asked for it
    officer       text,
    place         text,
    met_at        timestamptz,
    recorded_at   timestamptz,
    evidence_seq  bigint REFERENCES evidence_entry (seq),
    CHECK ((met_at IS NULL) = (evidence_seq IS NULL))
);
-- Contracts not yet signed whose application was pre-approved without a white-list
-- entry: the call wants those signed face to face, as the rule sets now decide.
INSERT INTO contract_face_to_face (contract_id, reasons)
SELECT DISTINCT c.contract_id, ARRAY['FACE_TO_FACE_NOT_WHITELISTED']
FROM contract c JOIN application a USING (application_id)
WHERE c.signed_at IS NULL AND a.decision IS NOT NULL
  AND NOT coalesce((a.decision ->> 'whitelisted')::boolean, false);

-- The contract's one-time signing code: only its keyed hash is kept, with its expiry;
-- wrong codes count per contract (not per code), and too many lock it for a while.
CREATE TABLE contract_otp (
    contract_id     bigint PRIMARY KEY,
    code_hash       bytea,               -- NULL: no live code
    salt            bytea,
    issued_at       timestamptz,
    expires_at      timestamptz,
    phone_masked    text,
    issues          integer NOT NULL DEFAULT 0 CHECK (issues >= 0),
    wrong_attempts  integer NOT NULL DEFAULT 0 CHECK (wrong_attempts >= 0),
    locked_until    timestamptz,
    CHECK ((code_hash IS NULL) = (salt IS NULL))
);
