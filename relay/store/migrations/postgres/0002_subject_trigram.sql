-- Words of a Subject are found by ILIKE '%words%': a trigram index answers that without reading
-- every message (pg_trgm ships with PostgreSQL and is a trusted extension: a role that may
-- create in the database may create it). Searches plan it per pattern (plan_cache_mode).

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX IF NOT EXISTS messages_subject_trgm ON messages USING gin (subject gin_trgm_ops);
