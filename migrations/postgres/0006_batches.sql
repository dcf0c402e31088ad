-- The twin of migrations/sqlite/0006_batches.sql.
-- Batches (SPEC §11): one request for the ledgers of many merchants and formats. The
-- worker role expands a batch into its members in chunks, each chunk in one transaction
-- with the cursor it reached, so an expansion resumes exactly where it stopped.
CREATE TABLE batches (
    id              BIGINT  PRIMARY KEY,
    created_by      TEXT    NOT NULL,
    -- '*' (every merchant the source lists that the creator may create for), or the
    -- JSON array of the merchant ids asked for.
    merchants       TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    period          TEXT    NOT NULL,
    -- The formats, comma-separated, in the order asked for.
    formats         TEXT    NOT NULL,
    -- NULL: each merchant's own zone.
    timezone        TEXT,
    -- true until every member has been added.
    expanding       BOOLEAN NOT NULL,
    -- Where the expansion goes on: an index into `merchants`, or the source's cursor.
    expand_cursor   TEXT,
    expand_holder   TEXT,
    expand_until    BIGINT,
    -- Merchants left out because the creator may not create for them (any more).
    skipped         BIGINT  NOT NULL DEFAULT 0,
    -- The counts and status as last published (batch.progress); the truth is the members.
    status          TEXT    NOT NULL,
    total           BIGINT  NOT NULL DEFAULT 0,
    n_pending       BIGINT  NOT NULL DEFAULT 0,
    n_processing    BIGINT  NOT NULL DEFAULT 0,
    n_completed     BIGINT  NOT NULL DEFAULT 0,
    n_rejected      BIGINT  NOT NULL DEFAULT 0,
    n_existing      BIGINT  NOT NULL DEFAULT 0,
    progress_seq    BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX batches_created_by ON batches (created_by, id);
CREATE INDEX batches_expanding ON batches (expand_until) WHERE expanding;
CREATE INDEX batches_running ON batches (id) WHERE status = 'RUNNING';

-- One row per ledger of a batch: made by it, or already there (existing).
CREATE TABLE batch_members (
    batch_id  BIGINT  NOT NULL REFERENCES batches (id),
    ledger_id BIGINT  NOT NULL REFERENCES ledgers (id),
    existing  BOOLEAN NOT NULL,
    PRIMARY KEY (batch_id, ledger_id)
);
CREATE INDEX batch_members_ledger ON batch_members (ledger_id);

CREATE TABLE batch_idempotency_keys (
    subject      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    batch_id     BIGINT  NOT NULL,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (subject, key)
);
CREATE INDEX batch_idempotency_keys_created_at ON batch_idempotency_keys (created_at);
