-- Canonical deals: indexed columns for lookups, the whole deal as JSON.
CREATE TABLE deals (
    id          TEXT    PRIMARY KEY,
    pipeline    TEXT    NOT NULL,
    stage       TEXT    NOT NULL,
    parent_id   TEXT,
    doc         TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX deals_parent ON deals (parent_id);
CREATE INDEX deals_stage ON deals (pipeline, stage);

-- Which canonical record an id in a connected system belongs to.
CREATE TABLE external_refs (
    system        TEXT NOT NULL,
    instance      TEXT NOT NULL,
    record_kind   TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    canonical_id  TEXT NOT NULL,
    PRIMARY KEY (system, instance, record_kind, external_id)
);
CREATE INDEX external_refs_canonical ON external_refs (canonical_id);
