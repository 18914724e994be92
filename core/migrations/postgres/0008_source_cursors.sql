-- Where a connector's reconciliation (catch-up) pass goes on from: one row
-- per name (e.g. `bitrix24:deals`), the value opaque to the store.
CREATE TABLE source_cursors (
    name        TEXT        PRIMARY KEY,
    value       TEXT        NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
