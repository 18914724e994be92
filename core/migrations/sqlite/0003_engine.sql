-- What the flow engine produces: invoices, tasks and timers of deals, the
-- outbox of commands owed to connected systems, each deal's audit trail and
-- the round-robin positions of teams. Indexed columns for lookups, the whole
-- record as JSON. Times are unix microseconds.

-- Who is responsible for a deal, for least-loaded assignment.
ALTER TABLE deals ADD COLUMN responsible TEXT;
UPDATE deals SET responsible = json_extract(doc, '$.responsible');
CREATE INDEX deals_responsible ON deals (responsible);

-- Invoices and customer orders; their external refs live in external_refs
-- with record_kind 'invoice'.
CREATE TABLE invoices (
    id          TEXT    PRIMARY KEY,
    deal_id     TEXT,
    kind        TEXT    NOT NULL,
    number      TEXT    NOT NULL,
    doc         TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX invoices_deal ON invoices (deal_id);

CREATE TABLE tasks (
    id          TEXT    PRIMARY KEY,
    deal_id     TEXT,
    assignee    TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    doc         TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX tasks_deal ON tasks (deal_id);
CREATE INDEX tasks_assignee ON tasks (assignee, status);

-- Durable timers; the scheduler polls the pending ones by due time.
CREATE TABLE timers (
    id          TEXT    PRIMARY KEY,
    deal_id     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    due_at      INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    doc         TEXT    NOT NULL
);
CREATE INDEX timers_deal ON timers (deal_id);
CREATE INDEX timers_due ON timers (due_at, id) WHERE status = 'pending';

-- The outbox: commands in the order they were queued. A command whose
-- idempotency key is already stored is dropped.
CREATE TABLE outbox_commands (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    connector        TEXT    NOT NULL,
    deal_id          TEXT,
    cause_event      TEXT    NOT NULL,
    doc              TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    published_at     INTEGER,
    state            TEXT    NOT NULL DEFAULT 'pending'
);
CREATE INDEX outbox_commands_deal ON outbox_commands (deal_id, seq);
CREATE INDEX outbox_commands_pending ON outbox_commands (seq) WHERE state = 'pending';

-- Each deal's audit trail, append-only.
CREATE TABLE trace_steps (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    deal_id      TEXT    NOT NULL,
    cause_event  TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    doc          TEXT    NOT NULL
);
CREATE INDEX trace_steps_deal ON trace_steps (deal_id, seq);

-- Round-robin position per team: how many members were assigned so far.
CREATE TABLE team_cursors (
    team      TEXT    PRIMARY KEY,
    position  INTEGER NOT NULL
);
