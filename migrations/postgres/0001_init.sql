-- Ledger jobs, their files and timelines, idempotency keys and policy grants.
-- The twin of migrations/sqlite/0001_init.sql: ids are BIGINT Snowflakes and times are
-- BIGINT milliseconds since the Unix epoch (UTC), so both adapters decode the same values.
-- Every object is created unqualified, i.e. in the first schema of the search_path: tests
-- give each store its own schema.

CREATE TABLE ledgers (
    id                 BIGINT  NOT NULL,
    merchant_id        TEXT    NOT NULL,
    type               TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    -- '' means "the merchant's own zone": a value of its own in the uniqueness rule.
    requested_timezone TEXT    NOT NULL,
    timezone           TEXT,
    format             TEXT    NOT NULL,
    stage              TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    version            BIGINT  NOT NULL,
    attempt_count      BIGINT  NOT NULL DEFAULT 0,
    -- Lease expiries since the last user action; the sweep gives up at APP_ENV_MAX_ATTEMPTS.
    stall_count        BIGINT  NOT NULL DEFAULT 0,
    lease_until        BIGINT,
    -- When the job last went (back) into the queue: the sweep re-enqueues from this.
    enqueued_at        BIGINT,
    failure_code       TEXT,
    failure_message    TEXT,
    failure_retryable  BOOLEAN,
    failure_at         BIGINT,
    created_by         TEXT    NOT NULL,
    created_at         BIGINT  NOT NULL,
    updated_at         BIGINT  NOT NULL,
    started_at         BIGINT,
    completed_at       BIGINT,
    deleted_at         BIGINT,
    -- Named explicitly: the adapter tells an id collision from an identity clash by it.
    CONSTRAINT ledgers_pkey PRIMARY KEY (id)
);

CREATE UNIQUE INDEX ledgers_identity_key
    ON ledgers (merchant_id, type, period, requested_timezone, format)
    WHERE deleted_at IS NULL;
CREATE INDEX ledgers_status_enqueued ON ledgers (status, enqueued_at);
CREATE INDEX ledgers_merchant_id ON ledgers (merchant_id, id);

CREATE TABLE ledger_files (
    ledger_id    BIGINT  NOT NULL REFERENCES ledgers (id),
    version      BIGINT  NOT NULL,
    content_type TEXT    NOT NULL,
    size_bytes   BIGINT  NOT NULL,
    sha256       TEXT    NOT NULL,
    file_name    TEXT    NOT NULL,
    object_key   TEXT    NOT NULL,
    attempt      BIGINT  NOT NULL,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (ledger_id, version)
);

CREATE TABLE ledger_events (
    seq        BIGSERIAL PRIMARY KEY,
    ledger_id  BIGINT  NOT NULL REFERENCES ledgers (id),
    at         BIGINT  NOT NULL,
    attempt    BIGINT  NOT NULL,
    status     TEXT,
    error_code TEXT,
    phase      TEXT,
    detail     TEXT
);
CREATE INDEX ledger_events_ledger ON ledger_events (ledger_id, seq);

-- Every status change lands on the timeline in the same statement that made it, so no
-- code path can change a status and forget the event (or record one it rolled back).
CREATE FUNCTION ledgers_status_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_events (ledger_id, at, attempt, status, error_code)
    VALUES (NEW.id, NEW.updated_at, NEW.attempt_count, NEW.status, NULL);
    RETURN NULL;
END;
$$;

CREATE FUNCTION ledgers_status_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_events (ledger_id, at, attempt, status, error_code)
    VALUES (NEW.id, NEW.updated_at, NEW.attempt_count, NEW.status,
            CASE WHEN NEW.status = 'REJECTED' THEN NEW.failure_code END);
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledgers_status_inserted AFTER INSERT ON ledgers
    FOR EACH ROW EXECUTE FUNCTION ledgers_status_inserted();

CREATE TRIGGER ledgers_status_changed AFTER UPDATE OF status ON ledgers
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION ledgers_status_changed();

CREATE TABLE idempotency_keys (
    subject      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    ledger_id    BIGINT  NOT NULL,
    status_code  BIGINT  NOT NULL,
    body         TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (subject, key)
);

CREATE TABLE policy_grants (
    subject    TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    domain     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (subject, role, domain)
);

CREATE TABLE policy_revision (
    id       BIGINT  PRIMARY KEY CHECK (id = 1),
    revision BIGINT  NOT NULL
);
-- Random, not counted: a revision also tells one database from another, so a policy
-- snapshot cached in a shared Redis is never taken for another database's.
INSERT INTO policy_revision (id, revision) VALUES (1, floor(random() * 9e18)::BIGINT);

-- Snowflake node ids leased by running processes (so replicas never share one).
CREATE TABLE node_leases (
    node_id    INTEGER PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL
);
