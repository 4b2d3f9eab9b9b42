-- MySQL and MariaDB sources (issue 14). Kept in step with
-- migrations/sqlite/0014_mysql_sources.sql.
ALTER TABLE sources DROP CONSTRAINT sources_engine_check;
ALTER TABLE sources ADD CONSTRAINT sources_engine_check
    CHECK (engine IN ('sqlite', 'postgres', 'mysql'));
