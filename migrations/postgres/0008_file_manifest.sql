-- The manifest of each stored file version (SPEC §13): the compact JWS (ES256) the worker
-- signed at completion over the version's claims. NULL for files stored before manifests
-- existed; their manifest endpoint answers 404 NOT_FOUND, saying so.
ALTER TABLE ledger_files ADD COLUMN manifest TEXT;
