-- The dispatcher's record of every command it has seen, and of every
-- attempt to perform one. A lane is the bus partition key (the deal, or the
-- command itself when it concerns no deal): at most one row of a lane is its
-- head (`waiting` for a retry or `parked` for an admin), and the lane's later
-- commands wait behind it as `held`, in `seq` order. `done`, `dead` and
-- `discarded` rows are final; `done` rows are how a redelivered command is
-- recognised before it is performed twice. Writers that change a lane hold
-- a transaction-level advisory lock on it, so two replicas never interleave.
CREATE TABLE deliveries (
    seq             BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command_id      UUID        NOT NULL UNIQUE REFERENCES outbox_commands (id),
    lane            TEXT        NOT NULL,
    deal_id         UUID,
    connector       TEXT        NOT NULL,
    state           TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    round_attempts  INTEGER     NOT NULL DEFAULT 0,
    due_at          TIMESTAMPTZ,
    last_class      TEXT,
    last_error      TEXT,
    outcome         TEXT,
    lease_owner     TEXT,
    lease_until     TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX deliveries_lane ON deliveries (lane, seq) WHERE state IN ('waiting', 'parked', 'held');
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE state = 'waiting';
CREATE INDEX deliveries_state ON deliveries (state, seq);
CREATE INDEX deliveries_deal ON deliveries (deal_id, seq);

CREATE TABLE delivery_attempts (
    seq         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command_id  UUID        NOT NULL,
    deal_id     UUID,
    attempt     INTEGER     NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    outcome     TEXT        NOT NULL,
    class       TEXT,
    error       TEXT,
    latency_us  BIGINT      NOT NULL
);
CREATE INDEX delivery_attempts_deal ON delivery_attempts (deal_id, seq);
CREATE INDEX delivery_attempts_command ON delivery_attempts (command_id, seq);
