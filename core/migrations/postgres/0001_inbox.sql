-- Raw events exactly as received: the inbox.
CREATE TABLE inbox_events (
    seq           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            UUID        NOT NULL UNIQUE,
    connector     TEXT        NOT NULL,
    delivery_key  TEXT,
    received_at   TIMESTAMPTZ NOT NULL,
    headers       JSONB       NOT NULL,
    body          BYTEA       NOT NULL,
    state         TEXT        NOT NULL DEFAULT 'pending',
    state_detail  TEXT,
    processed_at  TIMESTAMPTZ
);

-- NULL delivery keys never collide: events without a key are all kept.
CREATE UNIQUE INDEX inbox_events_delivery ON inbox_events (connector, delivery_key);
CREATE INDEX inbox_events_received ON inbox_events (received_at);
