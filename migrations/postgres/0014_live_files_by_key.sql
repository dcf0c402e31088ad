-- The files each merchant key still protects (not shredded), counted per root key by
-- `ledger keys status` and by every worker's `ledger_files_by_master_key` gauge each
-- minute: with this partial index the count reads the index alone. Without it, at a
-- million files the count read every file row (about 1 s on SQLite, logged as a slow
-- statement each minute).
CREATE INDEX ledger_files_key_live ON ledger_files (key_id) WHERE shredded_at IS NULL;
