-- The twin of migrations/sqlite/0007_schedules.sql.
-- Schedules (SPEC §11): each closed period of a cadence becomes one run, a batch that grows
-- as each merchant's period closes in its own zone and the delay passes.
CREATE TABLE schedules (
    id           BIGINT  PRIMARY KEY,
    created_by   TEXT    NOT NULL,
    -- '*', or the JSON array of the merchant ids.
    merchants    TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    formats      TEXT    NOT NULL,
    cadence      TEXT    NOT NULL,
    delay_ms     BIGINT  NOT NULL,
    from_period  TEXT,
    paused       BOOLEAN NOT NULL,
    -- The first period no run was opened for yet.
    next_period  TEXT    NOT NULL,
    -- The zones its merchants had at the last pass of a run (JSON array): when they close.
    zones        TEXT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX schedules_created_by ON schedules (created_by, id);

-- One run per (schedule, period): the primary key makes opening one exactly once.
CREATE TABLE schedule_runs (
    schedule_id BIGINT  NOT NULL REFERENCES schedules (id),
    period      TEXT    NOT NULL,
    batch_id    BIGINT  NOT NULL REFERENCES batches (id),
    started_at  BIGINT  NOT NULL,
    PRIMARY KEY (schedule_id, period)
);

-- A run's batch: its schedule, its delay, and the passes that add the merchants whose
-- period closed (plus the delay) in (pass_from, pass_to]; the next pass is due at pass_at.
ALTER TABLE batches ADD COLUMN schedule_id BIGINT;
ALTER TABLE batches ADD COLUMN delay_ms BIGINT;
ALTER TABLE batches ADD COLUMN pass_from BIGINT;
ALTER TABLE batches ADD COLUMN pass_to BIGINT;
ALTER TABLE batches ADD COLUMN pass_at BIGINT;
-- The first merchants left out (JSON array, at most 100), to name them.
ALTER TABLE batches ADD COLUMN skipped_ids TEXT;
