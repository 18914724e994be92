-- The embedded bus: a store-backed queue partitioned like the RabbitMQ
-- topology. Messages are consumed in `seq` order per partition by the one
-- consumer holding that partition's lease; an ack deletes the row, a dead
-- letter moves it to bus_dead.
CREATE TABLE bus_messages (
    seq              BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID        NOT NULL UNIQUE,
    partition        INTEGER     NOT NULL,
    key              TEXT        NOT NULL,
    idempotency_key  TEXT        NOT NULL,
    payload          BYTEA       NOT NULL,
    visible_at       TIMESTAMPTZ NOT NULL,
    attempts         INTEGER     NOT NULL DEFAULT 0,
    deliveries       INTEGER     NOT NULL DEFAULT 0
);
CREATE INDEX bus_messages_head ON bus_messages (partition, seq);

-- Single active consumer: one lease row per partition, renewed while its
-- owner consumes; an expired lease can be taken over.
CREATE TABLE bus_leases (
    partition   INTEGER     PRIMARY KEY,
    owner       TEXT        NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- Dead letters, oldest first.
CREATE TABLE bus_dead (
    seq              BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID        NOT NULL,
    partition        INTEGER     NOT NULL,
    key              TEXT        NOT NULL,
    idempotency_key  TEXT        NOT NULL,
    payload          BYTEA       NOT NULL,
    attempts         INTEGER     NOT NULL,
    reason           TEXT        NOT NULL,
    dead_at          TIMESTAMPTZ NOT NULL
);
