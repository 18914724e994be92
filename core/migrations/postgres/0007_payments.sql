-- Bank statements and the payments imported from them.

-- One row per imported statement file, its bytes kept as received. The
-- SHA-256 digest makes importing the same file twice a no-op.
CREATE TABLE bank_statements (
    id              UUID        PRIMARY KEY,
    digest          TEXT        NOT NULL UNIQUE,
    file_name       TEXT,
    source          TEXT        NOT NULL,
    format          TEXT        NOT NULL,
    imported_at     TIMESTAMPTZ NOT NULL,
    summary         JSONB       NOT NULL,
    payments_new    INTEGER     NOT NULL,
    payments_known  INTEGER     NOT NULL,
    body            BYTEA       NOT NULL
);

-- Payments: the id is derived from the document's identity (own account,
-- date, number, amount, currency, payer and payee accounts), so the same
-- document in an overlapping statement is the same row. `state` is
-- `matched`, `review` or `outgoing`; the whole record (payment, match with
-- its reasons, or the review note) is the JSON `doc`.
CREATE TABLE payments (
    seq           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            UUID        NOT NULL UNIQUE,
    statement_id  UUID        NOT NULL REFERENCES bank_statements (id),
    direction     TEXT        NOT NULL,
    state         TEXT        NOT NULL,
    invoice_id    UUID,
    payment_date  DATE        NOT NULL,
    doc           JSONB       NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX payments_state ON payments (state, seq);
CREATE INDEX payments_statement ON payments (statement_id, seq);
CREATE INDEX payments_invoice ON payments (invoice_id);

-- Open invoices are what payments are matched against: their status as a
-- column computed from the document.
ALTER TABLE invoices ADD COLUMN status TEXT GENERATED ALWAYS AS (doc ->> 'status') STORED;
CREATE INDEX invoices_status ON invoices (status);
