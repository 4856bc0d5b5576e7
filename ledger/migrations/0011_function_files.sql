-- Functions live one per file in ledger/sql/ (schema.name.sql, CREATE OR REPLACE
-- FUNCTION), applied by `switchd db upgrade` after the migrations whenever a file's
-- content changed. This table records which content each file had when applied, as
-- switchd_schema_migrations does for migrations. The functions that migrations
-- 0001-0010 created are replaced by their files with the same bodies.
CREATE TABLE public.switchd_schema_functions (
    name        text PRIMARY KEY,  -- schema.function, the file's name without .sql
    checksum    text NOT NULL,     -- sha256 of the file as applied
    applied_at  timestamptz NOT NULL DEFAULT now()
);
