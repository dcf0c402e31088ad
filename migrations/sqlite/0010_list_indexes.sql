-- GET /ledgers at a million ledgers (issue 19): every filter combination reads newest first
-- through an index whose equal columns are its filters and that ends in id, and stops at the
-- page size (src/store/sql/ledgers.rs, list_sql). The merchant alone has ledgers_merchant_id
-- (0001); no filter, or the type alone, reads the primary key backwards.
-- On a large table this migration holds a write lock on ledgers while the indexes build
-- (seconds per million rows; writes wait, none fail).
CREATE INDEX ledgers_status_id ON ledgers (status, id);
CREATE INDEX ledgers_period_id ON ledgers (period, id);
CREATE INDEX ledgers_status_period_id ON ledgers (status, period, id);
CREATE INDEX ledgers_merchant_status_id ON ledgers (merchant_id, status, id);
-- A merchant's ledgers of one period are a handful (types x formats x zones): merchant +
-- period + status filters that handful.
CREATE INDEX ledgers_merchant_period_id ON ledgers (merchant_id, period, id);
