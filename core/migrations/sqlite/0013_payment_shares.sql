-- The further invoices of payments split over several («по счетам 12, 13»):
-- `payments.invoice_id` names the first, this table the others. When an
-- ERP reports its receipt for one of those further invoices, the engine
-- finds the bank payment here and counts the same money once.
-- Only split payments have rows, so an import of ordinary payments writes
-- nothing here.
CREATE TABLE payment_shares (
    invoice_id  TEXT NOT NULL,
    payment_id  TEXT NOT NULL REFERENCES payments (id),
    PRIMARY KEY (invoice_id, payment_id)
) WITHOUT ROWID;
CREATE INDEX payment_shares_payment ON payment_shares (payment_id);

-- Payments split before this table existed.
INSERT OR IGNORE INTO payment_shares (invoice_id, payment_id)
SELECT json_extract(share.value, '$.invoice_id'), p.id
FROM payments p, json_each(p.doc, '$.also_matched') AS share
WHERE json_extract(share.value, '$.invoice_id') IS NOT NULL;
