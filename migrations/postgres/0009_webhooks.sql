-- The twin of migrations/sqlite/0009_webhooks.sql.
-- Webhooks (SPEC §12): endpoints, the events they are told about (an outbox written in the
-- transaction of the state change it reports) and each event's delivery to each endpoint.
CREATE TABLE webhooks (
    id              BIGINT  PRIMARY KEY,
    created_by      TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    -- The event types, one bit each (ledger.completed 1, ledger.rejected 2, batch.completed 4).
    event_mask      BIGINT  NOT NULL,
    -- No merchant list: every merchant the creator may read, judged at delivery time.
    all_merchants   BOOLEAN NOT NULL,
    -- The signing secret, sealed under the master key (base64); never stored in clear.
    secret          TEXT    NOT NULL,
    -- After a rotation the old secret also signs until previous_until (receivers switch over).
    previous_secret TEXT,
    previous_until  BIGINT,
    -- When the current run of failed attempts began; a success clears it.
    failing_since   BIGINT,
    -- The last failed attempt: after a quiet spell a failure begins a new run.
    last_failed_at  BIGINT,
    disabled_at     BIGINT,
    disabled_reason TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    deleted_at      BIGINT
);
CREATE INDEX webhooks_created_by ON webhooks (created_by, id);
-- The endpoints every state change looks through: the live ones only.
CREATE INDEX webhooks_live ON webhooks (id) WHERE deleted_at IS NULL AND disabled_at IS NULL;

-- The merchants of an endpoint that names them (the outbox finds endpoints by merchant).
CREATE TABLE webhook_merchants (
    merchant_id TEXT   NOT NULL,
    webhook_id  BIGINT NOT NULL REFERENCES webhooks (id),
    PRIMARY KEY (merchant_id, webhook_id)
);

-- One row per event that had an endpoint to go to; its id is the `webhook-id` (msg_<id>).
CREATE TABLE webhook_messages (
    id          BIGSERIAL PRIMARY KEY,
    type        TEXT   NOT NULL,
    -- The ledger or batch it is about.
    resource_id BIGINT NOT NULL,
    -- A ledger event's merchant; NULL for a batch event.
    merchant_id TEXT,
    -- A batch event's creator; NULL for a ledger event.
    owner       TEXT,
    -- The signed body, exactly as every attempt sends it.
    payload     TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    webhook_id      BIGINT  NOT NULL REFERENCES webhooks (id),
    message_id      BIGINT  NOT NULL REFERENCES webhook_messages (id),
    status          TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL,
    -- PENDING: when the next attempt is due. A claim moves it to the end of its lease, so a
    -- delivery whose worker died is due again then.
    next_attempt_at BIGINT,
    -- Fences the finish of an attempt: each claim takes a new value.
    lease           BIGINT  NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    last_attempt_at BIGINT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'PENDING';
CREATE INDEX webhook_deliveries_of ON webhook_deliveries (webhook_id, id);
-- The history the retention removes: finished deliveries by age, messages by delivery.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at)
    WHERE status <> 'PENDING';
CREATE INDEX webhook_deliveries_message ON webhook_deliveries (message_id);
