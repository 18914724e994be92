-- What a connector read for a stored event before it was mapped (e.g. the
-- Bitrix24 deal `crm.deal.get` returned for an event that named only its
-- id): `replay` maps this, never the source as it is now. `doc` is JSON
-- (records, gone records, which records the hub changed last); `read_at`
-- and `stored_at` are unix microseconds.
CREATE TABLE source_reads (
    event_id   TEXT    PRIMARY KEY,
    doc        TEXT    NOT NULL,
    read_at    INTEGER,
    stored_at  INTEGER NOT NULL
);
