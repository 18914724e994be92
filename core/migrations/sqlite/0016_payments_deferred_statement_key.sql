-- Payments check that their statement exists at COMMIT instead of row by
-- row, so that storing a large statement's payments needs no statement
-- journal.
--
-- SQLite keeps a statement journal for every statement that inserts
-- several rows and may fail half-way: it copies each page the statement
-- changes before changing it, to undo only that statement. An immediate
-- foreign key makes every multi-row INSERT such a statement. A statement's
-- payments go in 500 rows per INSERT, and each INSERT touches most pages
-- of the `payments` indexes (keyed by random ids): 100,000 payments copied
-- about a gigabyte of pages into the journal, and took about twice as long
-- as without it. A deferred key is checked once, when the import's
-- transaction commits, and the import writes the statement in that same
-- transaction before its payments. (The INSERT is `OR IGNORE`, so no other
-- constraint can fail half-way either: core/src/store/sqlite_payments.rs.)
--
-- SQLite cannot change a table's constraints in place: `payments` is built
-- again with the same columns, rows and indexes. `payment_shares` refers
-- to `payments`, so it is built again beside it, pointing at the new table
-- (renaming a table renames the references to it), and the old two are
-- dropped child first: no reference dangles at any point, with foreign
-- keys on.
CREATE TABLE payments_rebuilt (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    statement_id  TEXT    NOT NULL REFERENCES bank_statements (id) DEFERRABLE INITIALLY DEFERRED,
    direction     TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    invoice_id    TEXT,
    payment_date  TEXT    NOT NULL,
    doc           TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL,
    overpaid      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO payments_rebuilt (seq, id, statement_id, direction, state, invoice_id, payment_date, doc, updated_at,
                              overpaid)
SELECT seq, id, statement_id, direction, state, invoice_id, payment_date, doc, updated_at, overpaid
FROM payments ORDER BY seq;
-- AUTOINCREMENT never hands out a number twice: the new table goes on from
-- the highest number the old one gave, even if that row is gone.
DELETE FROM sqlite_sequence WHERE name = 'payments_rebuilt';
INSERT INTO sqlite_sequence (name, seq) SELECT 'payments_rebuilt', seq FROM sqlite_sequence WHERE name = 'payments';

CREATE TABLE payment_shares_rebuilt (
    invoice_id  TEXT NOT NULL,
    payment_id  TEXT NOT NULL REFERENCES payments_rebuilt (id),
    PRIMARY KEY (invoice_id, payment_id)
) WITHOUT ROWID;
INSERT INTO payment_shares_rebuilt (invoice_id, payment_id) SELECT invoice_id, payment_id FROM payment_shares;

DROP TABLE payment_shares;
DROP TABLE payments;
ALTER TABLE payments_rebuilt RENAME TO payments;
ALTER TABLE payment_shares_rebuilt RENAME TO payment_shares;

CREATE INDEX payments_state ON payments (state, seq);
CREATE INDEX payments_statement ON payments (statement_id, seq);
CREATE INDEX payments_invoice ON payments (invoice_id);
CREATE INDEX payment_shares_payment ON payment_shares (payment_id);
