-- What matching reads of an invoice, and the paid amounts statement
-- imports write, in narrow tables of their own beside the invoices' JSON
-- documents.
--
-- The matching columns of 0011 sit at the end of `invoices` rows, after
-- documents of a kilobyte or more: reading them walked each row's overflow
-- pages, and an import paying tens of thousands of invoices rewrote each
-- of those rows whole (`json_set` of the document) — hundreds of megabytes
-- of pages for a few bytes of paid amount each.
--
-- `invoice_match`: the columns of 0011 (the hub computes them,
-- core/src/store/invoice_keys.rs) as the invoice's document has them, one
-- ~150-byte row per invoice, written with the document.
CREATE TABLE invoice_match (
    id             TEXT    PRIMARY KEY,
    deal_id        TEXT,
    kind           TEXT    NOT NULL,
    number         TEXT    NOT NULL,
    number_key     TEXT    NOT NULL,
    number_digits  INTEGER,
    inn_key        INTEGER,
    client_inn     TEXT,
    invoice_date   TEXT    NOT NULL,
    total_amount   TEXT    NOT NULL,
    currency       TEXT    NOT NULL,
    paid_amount    TEXT    NOT NULL,
    is_open        INTEGER NOT NULL
) WITHOUT ROWID;

-- `invoice_paid`: what payments applied since the document was last
-- written whole — its `paid` (JSON), `status` and `updated_at` (as serde
-- writes it), and the paid amount and open flag they give. Only invoices
-- paid by a statement or a manual match have a row, so an import paying
-- tens of thousands of invoices writes a table of that size, not pages
-- spread over all invoices. A document is read with its row laid over it;
-- writing the document whole deletes the row.
CREATE TABLE invoice_paid (
    id           TEXT    PRIMARY KEY,
    paid         TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    paid_at      TEXT    NOT NULL,
    paid_amount  TEXT    NOT NULL,
    is_open      INTEGER NOT NULL
) WITHOUT ROWID;

-- Rows stored before 0011 whose columns are not filled yet get theirs when
-- `migrate` fills them (it writes both tables).
INSERT INTO invoice_match (id, deal_id, kind, number, number_key, number_digits, inn_key, client_inn,
                           invoice_date, total_amount, currency, paid_amount, is_open)
SELECT id, deal_id, kind, number, number_key, number_digits, inn_key, client_inn, invoice_date, total_amount,
       currency, paid_amount, is_open
FROM invoices WHERE number_key IS NOT NULL;

-- Plain indexes, as in 0011.
CREATE INDEX invoice_match_number_key ON invoice_match (number_key);
CREATE INDEX invoice_match_number_digits ON invoice_match (number_digits);
CREATE INDEX invoice_match_inn_key ON invoice_match (inn_key);

-- Lookups go to invoice_match now. `invoices` keeps its 0011 columns as
-- of the document (`invoices_unprojected` still finds rows never filled).
DROP INDEX invoices_number_key;
DROP INDEX invoices_number_digits;
DROP INDEX invoices_inn_key;
