-- Database roles for competition-pipeline (docs/operations.md, section 4).
-- Run as a superuser (or a role with CREATEROLE and CREATEDB) with psql:
--     psql -h DBHOST -U postgres -v ON_ERROR_STOP=1 -f docs/examples/roles.sql
-- No password appears here: set each one afterwards with psql's \password (it sends only the
-- SCRAM hash, so the server log and the shell history never see it), then put it into the
-- secret files of section 3.

-- == Dagster's own storage: its own database, owned by its own role. dagster-postgres creates
-- its tables on first start and `dagster instance migrate` alters them, so this role owns them.
CREATE ROLE dagster_storage LOGIN;
CREATE DATABASE dagster OWNER dagster_storage;
REVOKE ALL ON DATABASE dagster FROM PUBLIC;

-- == The competition tables.
CREATE ROLE competition_owner LOGIN;        -- runs `competition-pipeline schema`, migrations
CREATE ROLE competition_recorder LOGIN;     -- the pipeline (code server and run workers)
CREATE ROLE competition_admin LOGIN;        -- `competition-pipeline competition create|register`
CREATE ROLE competition_analyst LOGIN;      -- read-only: dashboards, ad-hoc SQL
CREATE DATABASE competition OWNER competition_owner;
REVOKE ALL ON DATABASE competition FROM PUBLIC;
GRANT CONNECT ON DATABASE competition
    TO competition_recorder, competition_admin, competition_analyst;
-- Staging tables are TEMP tables: only the recorder creates them.
GRANT TEMPORARY ON DATABASE competition TO competition_recorder;

\connect competition
-- PostgreSQL 15+ no longer lets PUBLIC create in schema public; on 14 and older do it here.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO competition_owner;
GRANT USAGE ON SCHEMA public
    TO competition_recorder, competition_admin, competition_analyst;

-- Next: create the tables as competition_owner (`competition-pipeline schema`), then run
-- grants.sql.
