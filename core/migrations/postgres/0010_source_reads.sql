-- What a connector read for a stored event before it was mapped (e.g. the
-- Bitrix24 deal `crm.deal.get` returned for an event that named only its
-- id): `replay` maps this, never the source as it is now. `doc` holds the
-- records, the gone records and which records the hub changed last.
CREATE TABLE source_reads (
    event_id   UUID        PRIMARY KEY,
    doc        JSONB       NOT NULL,
    read_at    TIMESTAMPTZ,
    stored_at  TIMESTAMPTZ NOT NULL
);
