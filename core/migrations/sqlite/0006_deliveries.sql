-- The dispatcher's record of every command it has seen, and of every
-- attempt to perform one. A lane is the bus partition key (the deal, or the
-- command itself when it concerns no deal): at most one row of a lane is its
-- head (`waiting` for a retry or `parked` for an admin), and the lane's later
-- commands wait behind it as `held`, in `seq` order. `done`, `dead` and
-- `discarded` rows are final; `done` rows are how a redelivered command is
-- recognised before it is performed twice. Times are unix microseconds.
CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id      TEXT    NOT NULL UNIQUE REFERENCES outbox_commands (id),
    lane            TEXT    NOT NULL,
    deal_id         TEXT,
    connector       TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    round_attempts  INTEGER NOT NULL DEFAULT 0,
    due_at          INTEGER,
    last_class      TEXT,
    last_error      TEXT,
    outcome         TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX deliveries_lane ON deliveries (lane, seq) WHERE state IN ('waiting', 'parked', 'held');
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE state = 'waiting';
CREATE INDEX deliveries_state ON deliveries (state, seq);
CREATE INDEX deliveries_deal ON deliveries (deal_id, seq);

CREATE TABLE delivery_attempts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id  TEXT    NOT NULL,
    deal_id     TEXT,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    class       TEXT,
    error       TEXT,
    latency_us  INTEGER NOT NULL
);
CREATE INDEX delivery_attempts_deal ON delivery_attempts (deal_id, seq);
CREATE INDEX delivery_attempts_command ON delivery_attempts (command_id, seq);
