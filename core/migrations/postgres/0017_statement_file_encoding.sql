-- How a statement's stored bytes are encoded: `zstd` (a zstd frame of the
-- file as received; core/src/store/statement_file.rs) for statements
-- imported from now on, `identity` for the files stored before, which stay
-- as they are. The hub compresses a file while it matches its payments, so
-- the import's transaction writes a tenth of the bytes; PostgreSQL's own
-- compression (0016) then finds nothing left to gain and keeps them as given.
ALTER TABLE bank_statements ADD COLUMN body_encoding TEXT NOT NULL DEFAULT 'identity';
