-- How a statement's stored bytes are encoded: `zstd` (a zstd frame of the
-- file as received; core/src/store/statement_file.rs) for statements
-- imported from now on, `identity` for the files stored before, which stay
-- as they are. The hub compresses a file while it matches its payments, so
-- the import's transaction writes a tenth of the pages: 58 MB of overflow
-- pages for a 1CClientBankExchange file of 100,000 payments before.
ALTER TABLE bank_statements ADD COLUMN body_encoding TEXT NOT NULL DEFAULT 'identity';
