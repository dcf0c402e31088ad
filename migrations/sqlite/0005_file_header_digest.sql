-- The SHA-256 of each stored object's encryption header, which pins the exact sealed
-- object (its data key is unique to it): a download checks it before the first byte and
-- needs no hash of the whole plaintext. NULL for files stored before it was recorded,
-- which are checked against their plaintext SHA-256 as before.
ALTER TABLE ledger_files ADD COLUMN header_sha256 TEXT;
