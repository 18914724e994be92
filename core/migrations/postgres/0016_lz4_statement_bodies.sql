-- A statement's bytes (tens of megabytes for a large one) and its payments'
-- records are compressed with lz4 instead of PostgreSQL's default pglz when
-- they are moved out of line: on a 58 MB 1CClientBankExchange file pglz took
-- about 0.75 s of the import's one transaction and lz4 0.13 s, for a value
-- of about the same size. Values stored before stay as they are; reading
-- is unchanged.
--
-- A server built without lz4 (`--with-lz4` is a build option) keeps pglz:
-- the migration then changes nothing.
DO $$
BEGIN
    ALTER TABLE bank_statements ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE payments ALTER COLUMN doc SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not supported by this server: statement bodies stay compressed with pglz';
END
$$;
