-- What the flow engine produces: invoices, tasks and timers of deals, the
-- outbox of commands owed to connected systems, each deal's audit trail and
-- the round-robin positions of teams. Indexed columns for lookups, the whole
-- record as JSONB.

-- Who is responsible for a deal, for least-loaded assignment.
ALTER TABLE deals ADD COLUMN responsible TEXT;
UPDATE deals SET responsible = doc->>'responsible';
CREATE INDEX deals_responsible ON deals (responsible);

-- Invoices and customer orders; their external refs live in external_refs
-- with record_kind 'invoice'.
CREATE TABLE invoices (
    id          UUID        PRIMARY KEY,
    deal_id     UUID,
    kind        TEXT        NOT NULL,
    number      TEXT        NOT NULL,
    doc         JSONB       NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX invoices_deal ON invoices (deal_id);

CREATE TABLE tasks (
    id          UUID        PRIMARY KEY,
    deal_id     UUID,
    assignee    TEXT        NOT NULL,
    status      TEXT        NOT NULL,
    doc         JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX tasks_deal ON tasks (deal_id);
CREATE INDEX tasks_assignee ON tasks (assignee, status);

-- Durable timers; the scheduler polls the pending ones by due time.
CREATE TABLE timers (
    id          UUID        PRIMARY KEY,
    deal_id     UUID        NOT NULL,
    name        TEXT        NOT NULL,
    due_at      TIMESTAMPTZ NOT NULL,
    status      TEXT        NOT NULL,
    doc         JSONB       NOT NULL
);
CREATE INDEX timers_deal ON timers (deal_id);
CREATE INDEX timers_due ON timers (due_at, id) WHERE status = 'pending';

-- The outbox: commands in the order they were queued. A command whose
-- idempotency key is already stored is dropped.
CREATE TABLE outbox_commands (
    seq              BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID        NOT NULL UNIQUE,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    connector        TEXT        NOT NULL,
    deal_id          UUID,
    cause_event      UUID        NOT NULL,
    doc              JSONB       NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    published_at     TIMESTAMPTZ,
    state            TEXT        NOT NULL DEFAULT 'pending'
);
CREATE INDEX outbox_commands_deal ON outbox_commands (deal_id, seq);
CREATE INDEX outbox_commands_pending ON outbox_commands (seq) WHERE state = 'pending';

-- Each deal's audit trail, append-only.
CREATE TABLE trace_steps (
    seq          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deal_id      UUID        NOT NULL,
    cause_event  UUID        NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    doc          JSONB       NOT NULL
);
CREATE INDEX trace_steps_deal ON trace_steps (deal_id, seq);

-- Round-robin position per team: how many members were assigned so far.
CREATE TABLE team_cursors (
    team      TEXT   PRIMARY KEY,
    position  BIGINT NOT NULL
);
