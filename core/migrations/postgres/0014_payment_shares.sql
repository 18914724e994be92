-- The further invoices of payments split over several («по счетам 12, 13»):
-- `payments.invoice_id` names the first, this table the others. When an
-- ERP reports its receipt for one of those further invoices, the engine
-- finds the bank payment here and counts the same money once.
-- Only split payments have rows, so an import of ordinary payments writes
-- nothing here.
CREATE TABLE payment_shares (
    invoice_id  UUID NOT NULL,
    payment_id  UUID NOT NULL REFERENCES payments (id),
    PRIMARY KEY (invoice_id, payment_id)
);
CREATE INDEX payment_shares_payment ON payment_shares (payment_id);

-- Payments split before this table existed.
INSERT INTO payment_shares (invoice_id, payment_id)
SELECT DISTINCT (share ->> 'invoice_id')::uuid, p.id
FROM payments p, jsonb_array_elements(coalesce(p.doc::jsonb -> 'also_matched', '[]'::jsonb)) AS share
WHERE share ->> 'invoice_id' IS NOT NULL;
