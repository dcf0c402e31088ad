-- Schedules (SPEC §11): each closed period of a cadence becomes one run, a batch that grows
-- as each merchant's period closes in its own zone and the delay passes.
CREATE TABLE schedules (
    id           INTEGER PRIMARY KEY,
    created_by   TEXT    NOT NULL,
    -- '*', or the JSON array of the merchant ids.
    merchants    TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    formats      TEXT    NOT NULL,
    cadence      TEXT    NOT NULL,
    delay_ms     INTEGER NOT NULL,
    from_period  TEXT,
    paused       INTEGER NOT NULL,
    -- The first period no run was opened for yet.
    next_period  TEXT    NOT NULL,
    -- The zones its merchants had at the last pass of a run (JSON array): when they close.
    zones        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted_at   INTEGER
);
CREATE INDEX schedules_created_by ON schedules (created_by, id);

-- One run per (schedule, period): the primary key makes opening one exactly once.
CREATE TABLE schedule_runs (
    schedule_id INTEGER NOT NULL REFERENCES schedules (id),
    period      TEXT    NOT NULL,
    batch_id    INTEGER NOT NULL REFERENCES batches (id),
    started_at  INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, period)
);

-- A run's batch: its schedule, its delay, and the passes that add the merchants whose
-- period closed (plus the delay) in (pass_from, pass_to]; the next pass is due at pass_at.
ALTER TABLE batches ADD COLUMN schedule_id INTEGER;
ALTER TABLE batches ADD COLUMN delay_ms INTEGER;
ALTER TABLE batches ADD COLUMN pass_from INTEGER;
ALTER TABLE batches ADD COLUMN pass_to INTEGER;
ALTER TABLE batches ADD COLUMN pass_at INTEGER;
-- The first merchants left out (JSON array, at most 100), to name them.
ALTER TABLE batches ADD COLUMN skipped_ids TEXT;
