-- Ledger jobs, their files and timelines, idempotency keys and policy grants.
-- Times are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE ledgers (
    id                 INTEGER PRIMARY KEY,
    merchant_id        TEXT    NOT NULL,
    type               TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    -- '' means "the merchant's own zone": a value of its own in the uniqueness rule.
    requested_timezone TEXT    NOT NULL,
    timezone           TEXT,
    format             TEXT    NOT NULL,
    stage              TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    version            INTEGER NOT NULL,
    attempt_count      INTEGER NOT NULL DEFAULT 0,
    -- Lease expiries since the last user action; the sweep gives up at APP_ENV_MAX_ATTEMPTS.
    stall_count        INTEGER NOT NULL DEFAULT 0,
    lease_until        INTEGER,
    -- When the job last went (back) into the queue: the sweep re-enqueues from this.
    enqueued_at        INTEGER,
    failure_code       TEXT,
    failure_message    TEXT,
    failure_retryable  INTEGER,
    failure_at         INTEGER,
    created_by         TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    started_at         INTEGER,
    completed_at       INTEGER,
    deleted_at         INTEGER
);

CREATE UNIQUE INDEX ledgers_identity_key
    ON ledgers (merchant_id, type, period, requested_timezone, format)
    WHERE deleted_at IS NULL;
CREATE INDEX ledgers_status_enqueued ON ledgers (status, enqueued_at);
CREATE INDEX ledgers_merchant_id ON ledgers (merchant_id, id);

CREATE TABLE ledger_files (
    ledger_id    INTEGER NOT NULL REFERENCES ledgers (id),
    version      INTEGER NOT NULL,
    content_type TEXT    NOT NULL,
    size_bytes   INTEGER NOT NULL,
    sha256       TEXT    NOT NULL,
    file_name    TEXT    NOT NULL,
    object_key   TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (ledger_id, version)
);

CREATE TABLE ledger_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    ledger_id  INTEGER NOT NULL REFERENCES ledgers (id),
    at         INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    status     TEXT,
    error_code TEXT,
    phase      TEXT,
    detail     TEXT
);
CREATE INDEX ledger_events_ledger ON ledger_events (ledger_id, seq);

-- Every status change lands on the timeline in the same statement that made it.
CREATE TRIGGER ledgers_status_inserted AFTER INSERT ON ledgers
BEGIN
    INSERT INTO ledger_events (ledger_id, at, attempt, status, error_code)
    VALUES (NEW.id, NEW.updated_at, NEW.attempt_count, NEW.status, NULL);
END;

CREATE TRIGGER ledgers_status_changed AFTER UPDATE OF status ON ledgers
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO ledger_events (ledger_id, at, attempt, status, error_code)
    VALUES (NEW.id, NEW.updated_at, NEW.attempt_count, NEW.status,
            CASE WHEN NEW.status = 'REJECTED' THEN NEW.failure_code END);
END;

CREATE TABLE idempotency_keys (
    subject      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    ledger_id    INTEGER NOT NULL,
    status_code  INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (subject, key)
);

CREATE TABLE policy_grants (
    subject    TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    domain     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (subject, role, domain)
);

CREATE TABLE policy_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
-- Random, not counted: a revision also tells one database from another, so a policy
-- snapshot cached in a shared Redis is never taken for another database's.
INSERT INTO policy_revision (id, revision) VALUES (1, abs(random()));

-- Snowflake node ids leased by running processes (so replicas never share one).
CREATE TABLE node_leases (
    node_id    INTEGER PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
