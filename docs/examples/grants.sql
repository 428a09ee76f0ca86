-- Table privileges for competition-pipeline (docs/operations.md, section 4). Run after the tables
-- exist (created by competition_owner with `competition-pipeline schema`), and again after every
-- schema change that adds a table:
--     psql -h DBHOST -U postgres -d competition -v ON_ERROR_STOP=1 -f docs/examples/grants.sql
-- Idempotent. Each role gets what the statements of the code it runs need, and nothing else
-- (section 4 lists them); tests/helpers/sql.py RECORDER_GRANTS gives the recorder's (with them
-- test_least_privilege_role_records_a_window records a window and test_rebuild.py dry-runs a
-- rebuild), tests/integration/test_operations_docs.py applies this file.
SET ROLE competition_owner;

-- The recorder, for competition_fill_events (the asset and its three checks).
-- competition_fill_keys is the key registry of the partitioned competition_fill_events: every
-- insert of fills registers its keys there first (docs/operations.md, section 7).
GRANT SELECT, INSERT ON competition_fill_events, competition_fill_keys, competition_fill_rejects,
      competition_fill_conflicts TO competition_recorder;
GRANT SELECT, INSERT, UPDATE ON competition_fill_windows TO competition_recorder;
-- Every insert of fills adds the rows' per-window totals (an upsert: INSERT ... ON CONFLICT DO
-- UPDATE) in the same statement; the standings read them.
GRANT SELECT, INSERT, UPDATE ON competition_fill_window_totals TO competition_recorder;
-- The open hour's follower takes, checks and hands back the hour's lease (docs/recording.md).
GRANT SELECT, INSERT, UPDATE ON competition_fill_followers TO competition_recorder;
-- Changing recorded history (docs/history.md) is the owner's: a rebuild's apply and undo, and
-- retention, connect as competition_owner (COMPETITION_OWNER_DATABASE_URL). The recorder reads
-- what they leave: retired windows (never recorded again), counter offsets, the rebuilds' audit.
GRANT SELECT ON competition_fill_rebuilds, competition_fill_revisions, competition_fill_retired,
      competition_fill_counter_offsets TO competition_recorder;

-- A missing month partition is created by the SECURITY DEFINER function competition_create_month
-- (it runs as competition_owner): only the recorder may call it, never PUBLIC (migration 0008
-- revokes PUBLIC's EXECUTE too; repeated here for databases created before it).
REVOKE EXECUTE ON FUNCTION competition_create_month(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION competition_create_month(date) TO competition_recorder;

-- The recorder, for competition_standings (the asset and standings_refresh_sensor use the same
-- COMPETITION_DATABASE_URL). It reads competitions and never changes one: two refreshes of a
-- competition take turns on an advisory lock, not on the row (a row lock needs UPDATE).
REVOKE UPDATE ON competitions FROM competition_recorder;  -- granted by releases before 0008
GRANT SELECT ON competitions TO competition_recorder;
GRANT SELECT ON competition_participants TO competition_recorder;
GRANT SELECT, INSERT, DELETE ON competition_standings TO competition_recorder;

-- The admin CLI: `competition create`, `competition register` (registering again updates the
-- username) and `standings` (read; `standings --refresh` needs the recorder's standings grants).
GRANT SELECT, INSERT ON competitions TO competition_admin;
GRANT SELECT, INSERT, UPDATE ON competition_participants TO competition_admin;
GRANT SELECT ON competition_standings TO competition_admin;

-- The analyst reads every table, including the ones the owner creates later.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO competition_analyst;
ALTER DEFAULT PRIVILEGES FOR ROLE competition_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO competition_analyst;

RESET ROLE;
