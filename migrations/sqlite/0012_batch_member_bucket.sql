-- GET /batches/:id/ledgers?status= at scale (issue 19): a member's count bucket — EXISTING
-- for a ledger that was already there, else its ledger's current status (the batch's
-- counts) — lives on the member, so a filtered page reads that bucket's members newest
-- first through (batch_id, bucket, ledger_id) and stops at the page, instead of joining
-- every member of a batch of 300,000 to find a few REJECTED ones.
ALTER TABLE batch_members ADD COLUMN bucket TEXT NOT NULL DEFAULT '';

UPDATE batch_members
SET bucket = CASE WHEN existing THEN 'EXISTING'
    ELSE (SELECT l.status FROM ledgers l WHERE l.id = batch_members.ledger_id) END;

CREATE INDEX batch_members_bucket ON batch_members (batch_id, bucket, ledger_id);

-- A ledger is made by one batch at most (any other holds it as EXISTING): its status
-- change moves that one member to its new bucket, in the statement that made it.
CREATE TRIGGER ledgers_status_batch_member AFTER UPDATE OF status ON ledgers
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE batch_members SET bucket = NEW.status WHERE ledger_id = NEW.id AND NOT existing;
END;
