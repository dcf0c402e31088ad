-- Idempotency keys expire after 24 h: the recovery sweep deletes the older ones by age.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
