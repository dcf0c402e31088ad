-- Batches at scale (issue 19). Each member row carries its count bucket — EXISTING for a
-- ledger that was already there, else its ledger's current status — and when its ledger
-- last changed status, both kept by the status change's own statement. So:
-- - GET /batches/:id/ledgers?status= reads that bucket's members newest first through
--   (batch_id, bucket, ledger_id) and stops at the page, instead of joining every member
--   of a batch of 300,000 to find a few REJECTED ones;
-- - the batch's counts (GET /batches/:id, and each worker's progress round every 500 ms)
--   are counted from that index alone, joining only the EXISTING members to learn which
--   are still open.
ALTER TABLE batch_members ADD COLUMN bucket TEXT NOT NULL DEFAULT '';
ALTER TABLE batch_members ADD COLUMN changed_at INTEGER NOT NULL DEFAULT 0;

UPDATE batch_members
SET bucket = CASE WHEN existing THEN 'EXISTING'
        ELSE (SELECT l.status FROM ledgers l WHERE l.id = batch_members.ledger_id) END,
    changed_at = (SELECT l.updated_at FROM ledgers l WHERE l.id = batch_members.ledger_id);

CREATE INDEX batch_members_bucket ON batch_members (batch_id, bucket, ledger_id, changed_at);

-- A ledger is made by one batch at most (any other holds it as EXISTING).
CREATE TRIGGER ledgers_status_batch_members AFTER UPDATE OF status ON ledgers
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE batch_members
    SET bucket = CASE WHEN existing THEN 'EXISTING' ELSE NEW.status END,
        changed_at = NEW.updated_at
    WHERE ledger_id = NEW.id;
END;
