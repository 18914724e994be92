-- Whether a matched payment pays its invoice beyond what that still owed,
-- as a column: the report of a statement imported again counts its
-- payments by state and overpayment from columns, instead of reading and
-- decoding every payment record (100,000 of them in a large statement).
ALTER TABLE payments ADD COLUMN overpaid BOOLEAN NOT NULL DEFAULT false;
UPDATE payments SET overpaid = true WHERE jsonb_typeof(doc::jsonb -> 'matched' -> 'overpaid') = 'object';
