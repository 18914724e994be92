-- Hub replicas that share this store, each with the time its last
-- heartbeat runs out. The live ones, sorted by id, split the bus
-- partitions between them (see `delivery::sharing`).
CREATE TABLE hub_replicas (
    id               TEXT        PRIMARY KEY,
    heartbeat_until  TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL
);
