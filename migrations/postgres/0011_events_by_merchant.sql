-- ?since= replays for some merchants (a dashboard, a merchant's own client) read those
-- merchants' status events only (issue 19; src/store/sql/ledgers.rs, replay_sql), not every
-- merchant's events of the window. The triggers now record the ledger's merchant on each
-- status event. Events older than the longest replay (APP_ENV_WS_REPLAY_MAX_AGE_MS, at most
-- 7 days) are never replayed, so only the last 7 days are filled in here (through the
-- (at, seq) index). Adding the column rewrites nothing; the index build holds a write lock
-- on ledger_events (seconds per million events; status changes wait, none fail).
-- No status change may fall between the backfill and the new trigger (it would keep the
-- old value for good): they wait for this migration (it runs in one transaction).
LOCK TABLE ledgers IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE ledger_events ADD COLUMN merchant_id TEXT;

UPDATE ledger_events e
SET merchant_id = l.merchant_id
FROM ledgers l
WHERE l.id = e.ledger_id
  AND e.status IS NOT NULL
  AND e.at > (extract(epoch FROM now()) * 1000)::bigint - 604800000;

-- Where a replay starts (the oldest of the merchants' events after `since`) and each of its
-- pages (their events of the window after the last one sent) read the merchants' window.
CREATE INDEX ledger_events_merchant_at ON ledger_events (merchant_id, at, seq)
    WHERE status IS NOT NULL;

CREATE OR REPLACE FUNCTION ledgers_status_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_events (ledger_id, merchant_id, at, attempt, status, error_code)
    VALUES (NEW.id, NEW.merchant_id, NEW.updated_at, NEW.attempt_count, NEW.status, NULL);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION ledgers_status_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_events (ledger_id, merchant_id, at, attempt, status, error_code)
    VALUES (NEW.id, NEW.merchant_id, NEW.updated_at, NEW.attempt_count, NEW.status,
            CASE WHEN NEW.status = 'REJECTED' THEN NEW.failure_code END);
    RETURN NULL;
END;
$$;
