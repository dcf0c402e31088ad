-- The key hierarchy (SPEC §15): root key → merchant key → file data key.
--
-- A merchant key is 32 random bytes, stored only wrapped by the root (a local master key or
-- a KMS key). Files sealed since this migration (object format 2) have their data key
-- wrapped by their merchant's key; a root rotation re-wraps these rows, never the files.
CREATE TABLE merchant_keys (
    -- Random, 32 hex characters: named in every format-2 object's header.
    key_id       TEXT    PRIMARY KEY,
    merchant_id  TEXT    NOT NULL,
    -- The root key that wraps it: `local:<8 hex>` (a master key's id) or `kms:<key id>`.
    root_key_id  TEXT    NOT NULL,
    -- The wrapped key (base64); '' once the key was shredded.
    wrapped      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    rewrapped_at INTEGER,
    -- Set by `ledger merchant shred`: the key is destroyed, its files unreadable.
    shredded_at  INTEGER,
    shredded_by  TEXT
);
-- A merchant's one live key, which seals its new files.
CREATE UNIQUE INDEX merchant_keys_live ON merchant_keys (merchant_id) WHERE shredded_at IS NULL;
-- `ledger keys rewrap` / `keys status`: the keys each root still protects.
CREATE INDEX merchant_keys_root ON merchant_keys (root_key_id, key_id);

-- The merchant key that seals the file (format 2); NULL: format 1, sealed by a root key.
ALTER TABLE ledger_files ADD COLUMN key_id TEXT;
-- Set when the file can no longer be read: its merchant key was shredded, or retention
-- removed its objects (`shred_reason` says which: MERCHANT_SHRED, RETENTION).
ALTER TABLE ledger_files ADD COLUMN shredded_at INTEGER;
ALTER TABLE ledger_files ADD COLUMN shred_reason TEXT;
-- When retention removed the file's objects (set after they are gone; a file marked for
-- retention without it has objects left to remove).
ALTER TABLE ledger_files ADD COLUMN removed_at INTEGER;
-- The object a rewrap replaced (sealed by a local key directly), until it is removed: a
-- rewrap finishes the removal, and a shred of the merchant waits for it.
ALTER TABLE ledger_files ADD COLUMN replaced_object_key TEXT;
CREATE INDEX ledger_files_replaced ON ledger_files (ledger_id, version) WHERE replaced_object_key IS NOT NULL;
-- Files by merchant key (`keys status`, a shred marking its files).
CREATE INDEX ledger_files_key ON ledger_files (key_id);
-- The files still sealed by a root key directly, which `ledger keys rewrap` re-seals: an
-- index that empties as it goes.
CREATE INDEX ledger_files_root_sealed ON ledger_files (ledger_id, version) WHERE key_id IS NULL;

-- What operators did to keys: shreds, rewraps, retention. Nothing deletes from it.
CREATE TABLE key_audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    merchant_id TEXT,
    key_id      TEXT,
    detail      TEXT    NOT NULL
);
CREATE INDEX key_audit_merchant ON key_audit (merchant_id, id);

-- Operator jobs on keys that must not run twice at once (`ledger keys rewrap`): one lease
-- each, renewed while the job runs; a holder that died loses it when `until` passes.
CREATE TABLE key_leases (
    name   TEXT    PRIMARY KEY,
    holder TEXT    NOT NULL,
    until  INTEGER NOT NULL
);

-- Keys of the service itself, wrapped by the root like merchant keys: `webhook-secrets`
-- seals the webhook endpoints' signing secrets.
CREATE TABLE service_keys (
    name         TEXT    PRIMARY KEY,
    root_key_id  TEXT    NOT NULL,
    wrapped      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    rewrapped_at INTEGER
);
