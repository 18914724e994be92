-- Which invoices changed since a reader last looked: the hub keeps the
-- open invoices statement imports match against in memory
-- (connectors/bank/src/matching/open_index.rs) and brings that copy up to
-- date before each import by reading only the rows written since.
--
-- `store_generations` holds one counter per kind of record; every
-- transaction that writes `invoice_match` or `invoice_paid` rows takes the
-- next value of the `invoices` counter and stamps its rows with it
-- (`changed`). SQLite has one writer at a time, so the counter grows in
-- commit order: a reader that saw value V has seen every row stamped V or
-- less once it reads the rows stamped above its last V. Rows stored
-- before this migration keep 0, and the counter starts at 1: a reader
-- starting from nothing (0) reads every row, and is at 1 or later after.
CREATE TABLE store_generations (
    name   TEXT    PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO store_generations (name, value) VALUES ('invoices', 1);

ALTER TABLE invoice_match ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invoice_paid ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX invoice_match_changed ON invoice_match (changed);
CREATE INDEX invoice_paid_changed ON invoice_paid (changed);
