-- The result of the four-factor identity verification, read by the rules (id.valid).
ALTER TABLE application ADD COLUMN identity_verified boolean NOT NULL DEFAULT false;
