-- Raw events exactly as received: the inbox. Times are unix microseconds.
CREATE TABLE inbox_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    connector     TEXT    NOT NULL,
    delivery_key  TEXT,
    received_at   INTEGER NOT NULL,
    headers       TEXT    NOT NULL,
    body          BLOB    NOT NULL,
    state         TEXT    NOT NULL DEFAULT 'pending',
    state_detail  TEXT,
    processed_at  INTEGER
);

-- NULL delivery keys never collide: events without a key are all kept.
CREATE UNIQUE INDEX inbox_events_delivery ON inbox_events (connector, delivery_key);
CREATE INDEX inbox_events_received ON inbox_events (received_at);
