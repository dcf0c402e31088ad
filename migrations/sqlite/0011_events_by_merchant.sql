-- ?since= replays for some merchants (a dashboard, a merchant's own client) read those
-- merchants' status events only (issue 19; src/store/sql/ledgers.rs, replay_sql), not every
-- merchant's events of the window. The triggers now record the ledger's merchant on each
-- status event. Events older than the longest replay (APP_ENV_WS_REPLAY_MAX_AGE_MS, at most
-- 7 days) are never replayed, so only the last 7 days are filled in here.
ALTER TABLE ledger_events ADD COLUMN merchant_id TEXT;

UPDATE ledger_events
SET merchant_id = (SELECT l.merchant_id FROM ledgers l WHERE l.id = ledger_events.ledger_id)
WHERE status IS NOT NULL
  AND at > CAST(strftime('%s', 'now') AS INTEGER) * 1000 - 604800000;

-- Where a replay starts (the oldest of the merchants' events after `since`) and each of its
-- pages (their events of the window after the last one sent) read the merchants' window.
CREATE INDEX ledger_events_merchant_at ON ledger_events (merchant_id, at, seq)
    WHERE status IS NOT NULL;

DROP TRIGGER ledgers_status_inserted;
CREATE TRIGGER ledgers_status_inserted AFTER INSERT ON ledgers
BEGIN
    INSERT INTO ledger_events (ledger_id, merchant_id, at, attempt, status, error_code)
    VALUES (NEW.id, NEW.merchant_id, NEW.updated_at, NEW.attempt_count, NEW.status, NULL);
END;

DROP TRIGGER ledgers_status_changed;
CREATE TRIGGER ledgers_status_changed AFTER UPDATE OF status ON ledgers
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO ledger_events (ledger_id, merchant_id, at, attempt, status, error_code)
    VALUES (NEW.id, NEW.merchant_id, NEW.updated_at, NEW.attempt_count, NEW.status,
            CASE WHEN NEW.status = 'REJECTED' THEN NEW.failure_code END);
END;
