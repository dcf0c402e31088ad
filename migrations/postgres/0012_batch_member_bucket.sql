-- Batches at scale (issue 19). Each member row carries its count bucket — EXISTING for a
-- ledger that was already there, else its ledger's current status — and when its ledger
-- last changed status, both kept by the status change's own statement. So:
-- - GET /batches/:id/ledgers?status= reads that bucket's members newest first through
--   (batch_id, bucket, ledger_id) and stops at the page, instead of joining every member
--   of a batch of 300,000 to find a few REJECTED ones;
-- - the batch's counts (GET /batches/:id, and each worker's progress round every 500 ms)
--   are counted from that index alone, joining only the EXISTING members to learn which
--   are still open.
-- The backfill rewrites batch_members once (seconds per million members).
-- No status change may fall between the backfill and the new trigger (it would keep the
-- old value for good): they wait for this migration (it runs in one transaction).
LOCK TABLE ledgers IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE batch_members ADD COLUMN bucket TEXT NOT NULL DEFAULT '';
ALTER TABLE batch_members ADD COLUMN changed_at BIGINT NOT NULL DEFAULT 0;

UPDATE batch_members m
SET bucket = CASE WHEN m.existing THEN 'EXISTING' ELSE l.status END,
    changed_at = l.updated_at
FROM ledgers l
WHERE l.id = m.ledger_id;

CREATE INDEX batch_members_bucket ON batch_members (batch_id, bucket, ledger_id, changed_at);

-- A ledger is made by one batch at most (any other holds it as EXISTING).
CREATE FUNCTION ledgers_status_batch_members() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE batch_members
    SET bucket = CASE WHEN existing THEN 'EXISTING' ELSE NEW.status END,
        changed_at = NEW.updated_at
    WHERE ledger_id = NEW.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledgers_status_batch_members AFTER UPDATE OF status ON ledgers
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION ledgers_status_batch_members();

-- During a rolling upgrade a worker of the previous version may still expand a batch,
-- inserting members without a bucket: the database fills it in.
CREATE FUNCTION batch_members_bucket_filled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.bucket = '' THEN
        SELECT CASE WHEN NEW.existing THEN 'EXISTING' ELSE l.status END, l.updated_at
        INTO NEW.bucket, NEW.changed_at
        FROM ledgers l WHERE l.id = NEW.ledger_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER batch_members_bucket_filled BEFORE INSERT ON batch_members
    FOR EACH ROW EXECUTE FUNCTION batch_members_bucket_filled();
