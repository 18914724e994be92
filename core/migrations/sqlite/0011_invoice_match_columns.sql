-- What a statement import matches payments by, as columns of `invoices`
-- beside the JSON document, so an import looks up only the open invoices
-- its payments point at (by folded number, by the digits a number ends
-- in, by the client's INN) and reads a slim projection of them instead of
-- every open invoice's document.
--
-- `number_key` is the number folded as matching compares it (case,
-- separators, Cyrillic/Latin look-alikes ignored), `number_digits` the
-- digits it ends in, `inn_key` the client's 10- or 12-digit INN as a
-- number: the hub computes them (core/src/store/invoice_keys.rs) when it
-- writes an invoice, and fills them for rows stored before this migration
-- on start (`migrate`), which finds those rows by `number_key IS NULL`.
-- Amounts are decimal text, `invoice_date` is `YYYY-MM-DD`, `is_open` is 1
-- for `open` and `partially_paid`.
ALTER TABLE invoices ADD COLUMN number_key TEXT;
ALTER TABLE invoices ADD COLUMN number_digits INTEGER;
ALTER TABLE invoices ADD COLUMN inn_key INTEGER;
ALTER TABLE invoices ADD COLUMN client_inn TEXT;
ALTER TABLE invoices ADD COLUMN invoice_date TEXT;
ALTER TABLE invoices ADD COLUMN total_amount TEXT;
ALTER TABLE invoices ADD COLUMN currency TEXT;
ALTER TABLE invoices ADD COLUMN paid_amount TEXT;
ALTER TABLE invoices ADD COLUMN is_open INTEGER NOT NULL DEFAULT 0;

-- Plain indexes, not partial ones on the open invoices: an import turns
-- tens of thousands of invoices from open to paid, and with partial
-- indexes each of those would leave all three. Lookups filter on
-- `is_open` in the row instead; they read the paid invoices that share a
-- number or a client too (a few per key).
CREATE INDEX invoices_number_key ON invoices (number_key);
CREATE INDEX invoices_number_digits ON invoices (number_digits);
CREATE INDEX invoices_inn_key ON invoices (inn_key);
CREATE INDEX invoices_unprojected ON invoices (id) WHERE number_key IS NULL;

-- Open invoices were found by `status` (0007); `is_open` serves now, and
-- the index on the status computed from the document would be updated on
-- every payment for nothing.
DROP INDEX invoices_status;
