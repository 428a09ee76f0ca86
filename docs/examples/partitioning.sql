-- Online preparation of a LARGE competition_fill_events for migration 0002 (monthly partitions;
-- docs/operations.md, section 7). Optional: `competition-pipeline schema` does every step itself,
-- in its one transaction, which is right for a table of a few GB. On hundreds of GB, filling the
-- key registry, building two indexes and validating the bound CHECK would keep the table locked
-- for hours; run this script first, while the pipeline still runs (the previous release), as
-- competition_owner. The migration then finds each piece and reuses it: it registers only the keys
-- of windows recorded since the first pass, adopts the indexes and the CHECK, and its swap takes
-- seconds. Nothing is rewritten either way.
--
-- Pick a cutover month still ahead (here 2027-01) and run the upgrade (section 5) before its first
-- fill is recorded: from step 3 on, the old table refuses fills at or after the cutover (a CHECK
-- violation fails the window, without retries, until it is re-run after the upgrade). Months from
-- the cutover get their own partitions; everything before stays in the old table, attached as the
-- partition competition_fill_events_hist.
\set ON_ERROR_STOP on

-- 1. The key registry (the migration's own definition), filled while the pipeline runs. The comment
--    marks when: the migration registers again only the keys of windows recorded since then. The
--    mark is this pass's start minus one hour: recorded_at is a load's transaction start, and a
--    window load still open when the pass took its snapshot began less than an hour before it.
CREATE TABLE IF NOT EXISTS competition_fill_keys (
    trade_id bigint NOT NULL,
    wallet   text   NOT NULL,
    fill_ts  timestamptz NOT NULL,
    PRIMARY KEY (trade_id, wallet)
) PARTITION BY HASH (trade_id);
DO $$
BEGIN
    FOR r IN 0..15 LOOP
        EXECUTE format('CREATE TABLE IF NOT EXISTS competition_fill_keys_h%s PARTITION OF'
                       ' competition_fill_keys FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
                       lpad(r::text, 2, '0'), r);
    END LOOP;
    EXECUTE format('COMMENT ON TABLE competition_fill_keys IS %L',
                   'prefilled: windows recorded before ' || (now() - interval '1 hour'));
END $$;
INSERT INTO competition_fill_keys (trade_id, wallet, fill_ts)
SELECT trade_id, wallet, fill_ts FROM competition_fill_events
ON CONFLICT (trade_id, wallet) DO NOTHING;

-- 2. The partitioned parent's indexes on the old table, built without blocking the loads (outside
--    a transaction block). ATTACH adopts them instead of building them under lock.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS competition_fill_events_hist_pkey
    ON competition_fill_events (trade_id, wallet, fill_ts);
CREATE INDEX CONCURRENTLY IF NOT EXISTS competition_fill_events_hist_wallet_fill_ts
    ON competition_fill_events (wallet, fill_ts);

-- 3. A validated CHECK proving every row is before the cutover: ATTACH skips its scan. NOT VALID
--    first (a moment's lock), then VALIDATE (reads the table without blocking inserts).
ALTER TABLE competition_fill_events
    ADD CONSTRAINT competition_fill_events_hist_bound CHECK (fill_ts < '2027-01-01 00:00+00')
    NOT VALID;
ALTER TABLE competition_fill_events VALIDATE CONSTRAINT competition_fill_events_hist_bound;

-- 4. Then, with the pipeline stopped and drained, the upgrade itself (section 5):
--        competition-pipeline schema
--    and the grants of the new table, if grants.sql was not re-run: the migration copies the old
--    table's grants to the new parent and to competition_fill_keys (SELECT, INSERT).
