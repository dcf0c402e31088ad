-- Live clients reconnecting with ?since= read status changes by time across ledgers.
CREATE INDEX ledger_events_status_at ON ledger_events (at, seq) WHERE status IS NOT NULL;
