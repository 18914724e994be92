-- What matching reads of an invoice, and the paid amount and status that
-- statement imports write, in a narrow table of its own beside the
-- invoices' JSON documents.
--
-- An import paying tens of thousands of invoices rewrote each of their
-- `invoices` rows (`jsonb_set` of a document of a kilobyte or more, plus
-- locking them first): gigabytes of row versions for a few bytes of paid
-- amount each. Rows here are ~150 bytes, and the columns a payment writes
-- are in no index, so its updates stay on their page (HOT; hence the
-- fill factor).
--
-- Columns as in 0011 (the hub computes them, core/src/store/invoice_keys.rs),
-- plus the paid state a payment applied in place: `paid` (the document's
-- `paid`), `status` and `paid_at` (the document's `updated_at` as serde
-- writes it). When they are set, the invoice's document is read with them
-- laid over it; writing the document whole clears them.
CREATE TABLE invoice_match (
    id             UUID    PRIMARY KEY,
    deal_id        UUID,
    kind           TEXT    NOT NULL,
    number         TEXT    NOT NULL,
    number_key     TEXT    NOT NULL,
    number_digits  BIGINT,
    inn_key        BIGINT,
    client_inn     TEXT,
    invoice_date   DATE    NOT NULL,
    total_amount   TEXT    NOT NULL,
    currency       TEXT    NOT NULL,
    paid_amount    TEXT    NOT NULL,
    is_open        BOOLEAN NOT NULL,
    paid           JSONB,
    status         TEXT,
    paid_at        TEXT
) WITH (fillfactor = 80);

-- Rows stored before 0011 whose columns are not filled yet get theirs when
-- `migrate` fills them (it writes both tables).
INSERT INTO invoice_match (id, deal_id, kind, number, number_key, number_digits, inn_key, client_inn,
                           invoice_date, total_amount, currency, paid_amount, is_open)
SELECT id, deal_id, kind, number, number_key, number_digits, inn_key, client_inn, invoice_date, total_amount,
       currency, paid_amount, is_open
FROM invoices WHERE number_key IS NOT NULL;

-- Plain indexes, as in 0011; a payment writes none of their columns.
CREATE INDEX invoice_match_number_key ON invoice_match (number_key);
CREATE INDEX invoice_match_number_digits ON invoice_match (number_digits);
CREATE INDEX invoice_match_inn_key ON invoice_match (inn_key);

-- Lookups go to invoice_match now. `invoices` keeps its 0011 columns as
-- of the document (`invoices_unprojected` still finds rows never filled).
DROP INDEX invoices_number_key;
DROP INDEX invoices_number_digits;
DROP INDEX invoices_inn_key;

-- Statistics for the lookups right away, not when autovacuum gets to it.
ANALYZE invoice_match;
