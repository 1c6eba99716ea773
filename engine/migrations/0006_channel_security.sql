-- Issue 21 (security hardening), the control database.
--
-- channel.signature_v1_until  until when the channel may still sign with version 1 of
--     API.md's signature (no channel id, no Idempotency-Key); NULL: version 2 only.
--     Channels that exist now get 30 days to move over; new channels have none.
-- channel.rate_limit_per_s    the channel's own request rate limit; NULL: the
--     engine's default (rate_limit.per_channel_per_s).
-- data_migration              the data steps `python -m engine migrate` runs after the
--     SQL migrations (engine.stores.pii_rebind: re-sealing channel secrets bound to
--     their channel id), each recorded once done.

ALTER TABLE channel ADD COLUMN signature_v1_until timestamptz;
UPDATE channel SET signature_v1_until = now() + interval '30 days';

ALTER TABLE channel ADD COLUMN rate_limit_per_s numeric(9, 1)
    CHECK (rate_limit_per_s BETWEEN 0.1 AND 100000);

CREATE TABLE data_migration (
    name     text PRIMARY KEY,
    done_at  timestamptz NOT NULL DEFAULT now()
);
