-- The digest of the grant set at each revision (SHA-256 of its canonical form): a copy of the
-- grants cached outside the store (Redis) is used only if it hashes to this. NULL until the
-- store computes it (first read, or the next grant change).
ALTER TABLE policy_revision ADD COLUMN digest TEXT;
