-- Growth plan for competition_fill_events: monthly RANGE partitions on fill_ts, plus a global
-- key registry. docs/operations.md, section 7, says when and why; this is the worked SQL.
--
-- NOT APPLIED BY THE CODE TODAY, AND TODAY'S CODE MUST NOT RUN AGAINST THE RESULT: store.py must
-- change in the same release (section 7 lists how). Against this layout, today's code fails every
-- re-recorded window ("there is no unique or exclusion constraint matching the ON CONFLICT
-- specification": its `ON CONFLICT (trade_id, wallet)` has no matching unique index on the
-- parent), and its first recordings skip competition_fill_keys, so nothing would stop a second
-- version of a fill with another fill_ts from being inserted.
--
-- Run as competition_owner: steps 1-4 while the pipeline runs, steps 5-6 with the sensors stopped
-- and the run queue drained (section 5). Cutover: every row before 2027-01-01 UTC stays where it
-- is, in the old table, attached as one "history" partition; each month from the cutover gets its
-- own partition. Nothing is rewritten. Pick a cutover month still ahead and finish step 5 before
-- its first fill is recorded: from step 3 on, the old table refuses fills at or after the cutover
-- (a CHECK violation fails the window, without retries, until it is re-run after the swap).
\set ON_ERROR_STOP on

-- 1. The key registry: one row per (trade_id, wallet) ever recorded, with the fill time of the
--    first version. Its primary key keeps (trade_id, wallet) unique across all months, which a
--    partitioned table cannot do by itself. Hash-partitioned on trade_id so each piece stays a
--    size that VACUUM and REINDEX handle in minutes.
CREATE TABLE competition_fill_keys (
    trade_id bigint NOT NULL,
    wallet   text   NOT NULL,
    fill_ts  timestamptz NOT NULL,
    PRIMARY KEY (trade_id, wallet)
) PARTITION BY HASH (trade_id);
DO $$
BEGIN
    FOR r IN 0..15 LOOP
        EXECUTE format('CREATE TABLE competition_fill_keys_h%s PARTITION OF competition_fill_keys'
                       ' FOR VALUES WITH (MODULUS 16, REMAINDER %s)', lpad(r::text, 2, '0'), r);
    END LOOP;
END $$;
-- Every recorded key. On a billion rows this takes hours: run it once while the pipeline is still
-- running, then, in the pause of step 5, again for the windows recorded since T only: add
-- `WHERE window_start IN (SELECT window_start FROM competition_fill_windows WHERE recorded_at >=
-- T)`. T is the time this first pass started minus one hour: recorded_at is a load's transaction
-- start, and a window load still open when the pass took its snapshot began less than an hour
-- before it (window loads take seconds to minutes).
INSERT INTO competition_fill_keys (trade_id, wallet, fill_ts)
SELECT trade_id, wallet, fill_ts FROM competition_fill_events
ON CONFLICT (trade_id, wallet) DO NOTHING;

-- 2. The partitioned parent: same columns, defaults and CHECKs (created before step 3, whose
--    bound CHECK it must not copy). Its primary key must contain the
--    partition key (PostgreSQL refuses `PRIMARY KEY (trade_id, wallet)` here).
CREATE TABLE competition_fill_events_parted
    (LIKE competition_fill_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (fill_ts);
ALTER TABLE competition_fill_events_parted ADD PRIMARY KEY (trade_id, wallet, fill_ts);
CREATE INDEX ix_fill_events_window_start ON competition_fill_events_parted (window_start);
-- Standings read one wallet's fills over a period: (wallet, fill_ts) per month.
CREATE INDEX ix_fill_events_wallet_fill_ts ON competition_fill_events_parted (wallet, fill_ts);

-- 3. Prepare the old table to become the history partition without a scan or a build under lock:
--    the parent's indexes built CONCURRENTLY (outside a transaction block, while the pipeline
--    runs) and a validated CHECK that proves every row is before the cutover.
CREATE UNIQUE INDEX CONCURRENTLY competition_fill_events_hist_pkey
    ON competition_fill_events (trade_id, wallet, fill_ts);
-- Every index of the parent must exist on the old table before the swap, or ATTACH builds it
-- inside the swap transaction (hours, under lock). window_start has one already.
CREATE INDEX CONCURRENTLY competition_fill_events_hist_wallet_fill_ts
    ON competition_fill_events (wallet, fill_ts);
ALTER TABLE competition_fill_events
    ADD CONSTRAINT competition_fill_events_hist_bound CHECK (fill_ts < '2027-01-01 00:00+00')
    NOT VALID;
ALTER TABLE competition_fill_events VALIDATE CONSTRAINT competition_fill_events_hist_bound;

-- 4. Months are created ahead of time (also by the monthly job of section 7, which runs
--        SELECT competition_create_month(
--            (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months')::date);
--    as competition_owner). There is no DEFAULT
--    partition on purpose: a row for a month without a partition fails its window loudly
--    ("no partition of relation ... found for row") instead of landing in a catch-all that
--    blocks later ATTACHes.
CREATE FUNCTION competition_create_month(first_day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := format('competition_fill_events_%s', to_char(first_day, 'YYYY_MM'));
BEGIN
    IF first_day <> date_trunc('month', first_day)::date THEN
        RAISE EXCEPTION '% is not the first day of a month', first_day;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF competition_fill_events'
        ' FOR VALUES FROM (%L) TO (%L)',
        name,
        (first_day::timestamp AT TIME ZONE 'UTC'),
        ((first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    -- Each month is written for a few weeks (late fills, replays), then only read.
    EXECUTE format('ALTER TABLE %I SET (autovacuum_vacuum_insert_scale_factor = 0.02,'
                   ' autovacuum_analyze_scale_factor = 0.02)', name);
END $$;

-- 5. The swap: one short transaction (ACCESS EXCLUSIVE on the old table for a moment: the CHECK of
--    step 3 spares ATTACH its scan, and the old table's indexes are adopted as partitions of the
--    parent's).
BEGIN;
-- The old primary key (trade_id, wallet) goes: a partition can have only the parent's, and
-- competition_fill_keys now keeps (trade_id, wallet) unique. Only now, with nothing writing: the
-- code of the old release needs it for its ON CONFLICT.
ALTER TABLE competition_fill_events
    DROP CONSTRAINT competition_fill_events_pkey,
    ADD CONSTRAINT competition_fill_events_hist_pkey
        PRIMARY KEY USING INDEX competition_fill_events_hist_pkey;
ALTER TABLE competition_fill_events RENAME TO competition_fill_events_hist;
ALTER TABLE competition_fill_events_parted RENAME TO competition_fill_events;
-- A rename keeps constraint names: give the parent's key the name the old table's had.
ALTER TABLE competition_fill_events
    RENAME CONSTRAINT competition_fill_events_parted_pkey TO competition_fill_events_pkey;
ALTER TABLE competition_fill_events ATTACH PARTITION competition_fill_events_hist
    FOR VALUES FROM (MINVALUE) TO ('2027-01-01 00:00+00');
SELECT competition_create_month('2027-01-01');
SELECT competition_create_month('2027-02-01');
SELECT competition_create_month('2027-03-01');
COMMIT;

-- 6. Privileges: the parent is a new table. GRANTs on a partitioned table cover access through it
--    (the pipeline only ever names the parent); the analyst's default privileges cover the rest.
GRANT SELECT, INSERT ON competition_fill_events, competition_fill_keys TO competition_recorder;
GRANT SELECT ON competition_fill_events, competition_fill_keys TO competition_analyst;
ANALYZE competition_fill_events;  -- autovacuum never ANALYZEs a partitioned parent itself
