-- The embedded bus: a store-backed queue partitioned like the RabbitMQ
-- topology. Messages are consumed in `seq` order per partition by the one
-- consumer holding that partition's lease; an ack deletes the row, a dead
-- letter moves it to bus_dead. Times are unix microseconds.
CREATE TABLE bus_messages (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    partition        INTEGER NOT NULL,
    key              TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    visible_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    deliveries       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX bus_messages_head ON bus_messages (partition, seq);

-- Single active consumer: one lease row per partition, renewed while its
-- owner consumes; an expired lease can be taken over.
CREATE TABLE bus_leases (
    partition   INTEGER PRIMARY KEY,
    owner       TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- Dead letters, oldest first.
CREATE TABLE bus_dead (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL,
    partition        INTEGER NOT NULL,
    key              TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    attempts         INTEGER NOT NULL,
    reason           TEXT    NOT NULL,
    dead_at          INTEGER NOT NULL
);
