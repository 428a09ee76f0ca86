"""The rebuild's SQL, as named statements (``rebuild.py`` runs them, in this order per window).

Staged journal rows -> ``rb_rows`` (what the window should hold) -> ``rb_diff`` against
``rb_stored`` (what it holds) -> kept revisions, the replace, the window's side tables, the audit;
and the undo's way back through the same replace. Built only from the column constants of
``tables.py``, ``load.py`` and ``compare.py``: every value is a bound parameter. No Dagster here.
"""

from __future__ import annotations

from competition_pipeline.fills.rows import REJECT_FIELDS
from competition_pipeline.store.compare import DIFF_COLUMNS
from competition_pipeline.store.counters import REJECT_RULE
from competition_pipeline.store.digest import SQL_DIGEST, STORED_HASH
from competition_pipeline.store.load import (
    CAND_VALUES,
    DUP_DISTINCT,
    DUP_FIELDS,
    INSERT_COLUMNS,
    REF_DISTINCT,
    REF_FIELDS,
    SQL_STAGE,
)
from competition_pipeline.store.tables import (
    COUNTER_OFFSETS,
    FILL_CONFLICTS,
    FILL_EVENTS,
    FILL_KEYS,
    FILL_REBUILDS,
    FILL_REJECTS,
    FILL_RETIRED,
    FILL_REVISIONS,
    FILL_TOTALS,
    FILL_WINDOWS,
    OLD_ROW_COLUMNS,
    fill_events,
    recorded_row,
)

_ALL_COLUMNS = ", ".join(fill_events.columns.keys())

#: What an apply or an undo writes, by table: checked before anything is done, so the recorder's
#: role (SELECT and INSERT) fails at once with the URL to set instead of half way.
OWNER_PRIVILEGES = {
    FILL_EVENTS: ("INSERT", "UPDATE", "DELETE"),
    FILL_KEYS: ("INSERT", "UPDATE", "DELETE"),
    FILL_REJECTS: ("INSERT", "DELETE"),
    FILL_CONFLICTS: ("INSERT", "DELETE"),
    FILL_WINDOWS: ("INSERT", "UPDATE", "DELETE"),
    FILL_RETIRED: ("INSERT", "DELETE"),
    FILL_REBUILDS: ("INSERT", "UPDATE"),
    FILL_REVISIONS: ("INSERT",),
    COUNTER_OFFSETS: ("INSERT",),
    FILL_TOTALS: ("INSERT", "DELETE"),
}

#: A rebuild hashes and sorts whole windows (a million rows and more): in memory, not in batches
#: spilled to disk (PostgreSQL's default is 4MB; the diff's hash of a 2-million-row window's
#: stored rows takes about 500MB). A cap, for this session only: a small window uses what it needs.
WORK_MEM = "512MB"

# Temporary tables, made once per session: the dry run's READ ONLY transaction may write them
# but could not create them. Per window (emptied at every commit or rollback) and per range.
SQL_SESSION = (
    f"SET work_mem = '{WORK_MEM}'",
    # The temporary tables' ANALYZE samples 3,000 rows, not 30,000: the plans need their sizes
    # and keys' distinctness, not fine histograms (no other table is analyzed in this session).
    "SET default_statistics_target = 10",
    *SQL_STAGE[:2],
    f"CREATE TEMP TABLE rb_rows (LIKE {FILL_EVENTS} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE rb_stored (LIKE {FILL_EVENTS}) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE rb_conflicts (seq bigint, source_file text, line_no bigint,"
    " trade_id bigint, wallet text, conflicts_with text, differing_fields text)"
    " ON COMMIT DELETE ROWS",
    # n_row, o_row: where the derived and the stored row are in rb_rows and rb_stored (the
    # samples read a few by their ctid instead of scanning both).
    "CREATE TEMP TABLE rb_diff (change text, trade_id bigint, wallet text, fields text,"
    " moves boolean, n_row tid, o_row tid)"
    " ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE rb_elsewhere (LIKE {FILL_EVENTS}) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE rb_dups (trade_id bigint, wallet text) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE rb_keys (trade_id bigint, wallet text) ON COMMIT DELETE ROWS",
    # The standings effect (kept across commits): the range's windows, their totals before and
    # after, and the rows before and after of those that are a competition's partial edge.
    f"CREATE TEMP TABLE rb_range_rows (LIKE {FILL_EVENTS}) ON COMMIT PRESERVE ROWS",
    f"CREATE TEMP TABLE rb_range_old_rows (LIKE {FILL_EVENTS}) ON COMMIT PRESERVE ROWS",
    f"CREATE TEMP TABLE rb_range_totals (LIKE {FILL_TOTALS}) ON COMMIT PRESERVE ROWS",
    f"CREATE TEMP TABLE rb_range_old_totals (LIKE {FILL_TOTALS}) ON COMMIT PRESERVE ROWS",
    "CREATE TEMP TABLE rb_range_windows (window_start timestamptz PRIMARY KEY)"
    " ON COMMIT PRESERVE ROWS",
)

# The staged keys recorded under another window, with that recorded row. Only keys the window
# does not hold itself are looked up in the registry (on a rebuild of a recorded window, none or a
# few: one probe each), and they are found without comparing every staged key with every stored
# one: a first derivation and diff run as if no key were recorded elsewhere, and then the staged
# keys the window does not hold are its diff's added rows, and the keys of the rows its conflicting
# messages left out (``{conflicting}``, when there are any). Only when one of them is recorded
# elsewhere are the conflicts, the derivation and the diff run again, with it.
SQL_ELSEWHERE = f"""
INSERT INTO rb_elsewhere
SELECT e.* FROM (
    SELECT DISTINCT c0.trade_id, c0.wallet FROM (
        SELECT d.trade_id, d.wallet FROM rb_diff d WHERE d.change = 'added'
        {{conflicting}}
    ) c0
) c
CROSS JOIN LATERAL {recorded_row("c")} e
WHERE e.window_start <> %(window_start)s"""
ELSEWHERE_CONFLICTING = """
        UNION ALL
        SELECT s.trade_id, s.wallet FROM stage_fills s
        WHERE s.seq IN (SELECT x.seq FROM rb_conflicts x)
          AND NOT EXISTS (
              SELECT 1 FROM rb_stored o WHERE o.trade_id = s.trade_id AND o.wallet = s.wallet)"""
#: The first derivation, to be made again with the keys recorded elsewhere (temporary tables:
#: DELETE, as a READ ONLY transaction may not TRUNCATE).
SQL_DERIVE_AGAIN = (
    "DELETE FROM rb_conflicts",
    "DELETE FROM rb_rows",
    "DELETE FROM rb_diff",
)
SQL_DUPS = """
INSERT INTO rb_dups SELECT trade_id, wallet FROM stage_fills GROUP BY 1, 2 HAVING count(*) > 1"""
# As the careful path of a load finds conflicts, with this window's stored rows not counted as
# recorded (they are what is being replaced): against another window's row, or a later message
# with a key's first version in the journal and other content.
SQL_CONFLICTS = f"""
INSERT INTO rb_conflicts
SELECT s.seq, s.source_file, s.line_no, s.trade_id, s.wallet, 'recorded row', {REF_FIELDS}
FROM stage_fills s JOIN rb_elsewhere e ON e.trade_id = s.trade_id AND e.wallet = s.wallet
WHERE {REF_DISTINCT}
UNION ALL
SELECT s.seq, s.source_file, s.line_no, s.trade_id, s.wallet,
       sf.source_file || ':' || sf.line_no, {DUP_FIELDS}
FROM stage_fills s
JOIN (
    SELECT DISTINCT ON (s2.trade_id, s2.wallet) s2.*
    FROM stage_fills s2 JOIN rb_dups USING (trade_id, wallet)
    ORDER BY s2.trade_id, s2.wallet, s2.seq
) sf ON sf.trade_id = s.trade_id AND sf.wallet = s.wallet AND sf.seq <> s.seq
WHERE {DUP_DISTINCT}
  AND NOT EXISTS (
      SELECT 1 FROM rb_elsewhere e WHERE e.trade_id = s.trade_id AND e.wallet = s.wallet)"""
# Without a repeated key the DISTINCT ON sort is pure cost: {distinct} and {order} are empty.
SQL_DERIVE = f"""
INSERT INTO rb_rows ({", ".join(INSERT_COLUMNS)})
SELECT {{distinct}} {CAND_VALUES}
FROM stage_fills s
WHERE NOT EXISTS (SELECT 1 FROM rb_conflicts c WHERE c.seq = s.seq)
  AND NOT EXISTS (
      SELECT 1 FROM rb_elsewhere e WHERE e.trade_id = s.trade_id AND e.wallet = s.wallet)
{{order}}"""
# Every row stored under the window, whatever month its fill_ts put it in (an older rule may
# have placed it outside the window's hour, where the per-window reads do not look).
SQL_STORED = (
    f"INSERT INTO rb_stored SELECT * FROM {FILL_EVENTS} WHERE window_start = %(window_start)s"
)
_FIELDS = ", ".join(f"CASE WHEN n.{c} IS DISTINCT FROM o.{c} THEN '{c}' END" for c in DIFF_COLUMNS)
_NEW = ", ".join(f"n.{c}" for c in DIFF_COLUMNS)
_OLD = ", ".join(f"o.{c}" for c in DIFF_COLUMNS)
SQL_DIFF = f"""
INSERT INTO rb_diff
SELECT CASE WHEN o.trade_id IS NULL THEN 'added' WHEN n.trade_id IS NULL THEN 'removed'
            ELSE 'changed' END,
       coalesce(n.trade_id, o.trade_id), coalesce(n.wallet, o.wallet),
       CASE WHEN n.trade_id IS NULL OR o.trade_id IS NULL THEN ''
            ELSE concat_ws(',', {_FIELDS}) END,
       n.fill_ts IS DISTINCT FROM o.fill_ts, n.ctid, o.ctid
FROM rb_rows n FULL JOIN rb_stored o ON o.trade_id = n.trade_id AND o.wallet = n.wallet
WHERE n.trade_id IS NULL OR o.trade_id IS NULL OR ({_NEW}) IS DISTINCT FROM ({_OLD})"""
SQL_REJECTS_DIFF = f"""
SELECT count(*) FILTER (WHERE o.line_no IS NULL), count(*) FILTER (WHERE n.line_no IS NULL),
       count(*) FILTER (WHERE n.line_no IS NOT NULL AND o.line_no IS NOT NULL
                          AND (n.reason, n.raw_line) IS DISTINCT FROM (o.reason, o.raw_line))
FROM stage_rejects n
FULL JOIN (SELECT * FROM {FILL_REJECTS} WHERE window_start = %(window_start)s) o
  ON o.source_file = n.source_file AND o.line_no = n.line_no"""
SQL_CONFLICTS_DIFF = f"""
SELECT count(*) FILTER (WHERE o.line_no IS NULL), count(*) FILTER (WHERE n.line_no IS NULL),
       count(*) FILTER (WHERE n.line_no IS NOT NULL AND o.line_no IS NOT NULL
                          AND (n.conflicts_with, n.differing_fields)
                              IS DISTINCT FROM (o.conflicts_with, o.differing_fields))
FROM rb_conflicts n
FULL JOIN (SELECT * FROM {FILL_CONFLICTS} WHERE window_start = %(window_start)s) o
  ON o.source_file = n.source_file AND o.line_no = n.line_no AND o.wallet = n.wallet"""
# A few of each kind, taken without sorting the diff (a million changed rows would be sorted for
# five): the LIMITs read the first rows of each kind; their rows are fetched by ctid (TID scans,
# not a scan of the window's rows twice).
SQL_SAMPLES = """
WITH d AS (
    (SELECT * FROM rb_diff WHERE change = 'added' LIMIT %(sample)s)
    UNION ALL (SELECT * FROM rb_diff WHERE change = 'removed' LIMIT %(sample)s)
    UNION ALL (SELECT * FROM rb_diff WHERE change = 'changed' LIMIT %(sample)s)
)
SELECT d.change, d.trade_id, d.wallet, d.fields, to_jsonb(o)::text, to_jsonb(n)::text
FROM d
LEFT JOIN rb_stored o ON o.ctid = d.o_row
LEFT JOIN rb_rows n ON n.ctid = d.n_row
ORDER BY d.change, d.trade_id, d.wallet"""
SQL_WINDOW_STATE = f"""
SELECT EXISTS (SELECT 1 FROM {FILL_RETIRED} WHERE window_start = %(window_start)s),
       (SELECT (summary->>'version')::int FROM {FILL_WINDOWS}
         WHERE window_start = %(window_start)s)"""
SQL_NEW_REJECTS_BY_RULE = f"SELECT {REJECT_RULE}, count(*) FROM stage_rejects GROUP BY 1"
SQL_BY_FIELD = """
SELECT f, count(*) FROM rb_diff, unnest(string_to_array(fields, ',')) f
WHERE change = 'changed' GROUP BY f ORDER BY f"""

# -- apply ------------------------------------------------------------------------------------
# Every superseded row (removed or changed) is deleted and every new version (added or changed)
# inserted: measured on a 2-million-row window with a million rows changed, a delete and an insert
# took half the time of an UPDATE in place (the month's pages are full, so no update is HOT: each
# writes a new tuple and three index entries anyway, and wrote several times the WAL). A key
# changes only with its row's fill_ts (``moves``: maybe to another month's partition): then it is
# deleted and registered again; the others stay as they are.
_SUPERSEDED = "d.change IN ('removed', 'changed')"
_NEW_VERSION = "d.change IN ('added', 'changed')"
_KEY_GONE = "(d.change = 'removed' OR (d.change = 'changed' AND d.moves))"
_KEY_NEW = "(d.change = 'added' OR (d.change = 'changed' AND d.moves))"
_REVISION = """
INSERT INTO {revisions}
    (rebuild_id, window_start, change, trade_id, wallet, changed_fields,
     version_from, version_to, reason{old_columns})
SELECT %(rebuild_id)s, %(window_start)s, {source}.change, {source}.trade_id, {source}.wallet,
       {source}.fields, %(version_from)s, %(version_to)s, %(reason)s{old_values}"""
# The revisions (typed, migration 0004: the old row's columns as they are, no jsonb, no sort): an
# added row's has no old row; a superseded row's is kept by the statement that deletes it (the
# old row as the DELETE read it, not looked up again).
SQL_KEEP_ADDED = (
    _REVISION.format(revisions=FILL_REVISIONS, old_columns="", old_values="", source="d")
    + " FROM rb_diff d WHERE d.change = 'added'"
)
_GONE_COLUMNS = ", ".join(f"e.{c}" for c in fill_events.columns.keys())
SQL_REMOVE_SUPERSEDED = (
    f"""
WITH gone AS (
    DELETE FROM {FILL_EVENTS} e USING rb_diff d
    WHERE e.window_start = %(window_start)s AND e.trade_id = d.trade_id AND e.wallet = d.wallet
      AND {_SUPERSEDED}
    RETURNING d.change, d.fields, {_GONE_COLUMNS}
)"""
    + _REVISION.format(
        revisions=FILL_REVISIONS,
        old_columns=", " + ", ".join(OLD_ROW_COLUMNS.values()),
        old_values=", " + ", ".join(f"g.{c}" for c in OLD_ROW_COLUMNS),
        source="g",
    )
    + " FROM gone g"
)
SQL_REMOVE_KEYS = f"""
DELETE FROM {FILL_KEYS} k USING rb_diff d
WHERE k.trade_id = d.trade_id AND k.wallet = d.wallet AND {_KEY_GONE}"""
# A key registered without its row (deleted by hand) is taken over by the new version.
SQL_ADD_KEYS = f"""
INSERT INTO {FILL_KEYS} (trade_id, wallet, fill_ts)
SELECT n.trade_id, n.wallet, n.fill_ts FROM rb_rows n
JOIN rb_diff d ON d.trade_id = n.trade_id AND d.wallet = n.wallet AND {_KEY_NEW}
ON CONFLICT (trade_id, wallet) DO UPDATE SET fill_ts = EXCLUDED.fill_ts"""
SQL_ADD_ROWS = f"""
INSERT INTO {FILL_EVENTS} ({_ALL_COLUMNS})
SELECT {", ".join(f"n.{c}" for c in fill_events.columns.keys())} FROM rb_rows n
JOIN rb_diff d ON d.trade_id = n.trade_id AND d.wallet = n.wallet AND {_NEW_VERSION}"""
#: The replace, in order (the undo replays a rebuild's revisions through the same statements).
SQL_REPLACE = (
    SQL_KEEP_ADDED,
    SQL_REMOVE_SUPERSEDED,
    SQL_REMOVE_KEYS,
    SQL_ADD_KEYS,
    SQL_ADD_ROWS,
)
SQL_PREVIOUS = f"""
SELECT (SELECT to_jsonb(w) FROM {FILL_WINDOWS} w WHERE w.window_start = %(window_start)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.source_file, r.line_no), '[]')
          FROM {FILL_REJECTS} r WHERE r.window_start = %(window_start)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.source_file, c.line_no, c.wallet), '[]')
          FROM {FILL_CONFLICTS} c WHERE c.window_start = %(window_start)s),
       (SELECT to_jsonb(t) FROM {FILL_RETIRED} t WHERE t.window_start = %(window_start)s)"""
SQL_REJECTS_BY_RULE = f"""
SELECT {REJECT_RULE}, count(*) FROM {FILL_REJECTS}
WHERE window_start = %(window_start)s GROUP BY 1"""
SQL_CLEAR_WINDOW = (
    f"DELETE FROM {FILL_REJECTS} WHERE window_start = %(window_start)s",
    f"DELETE FROM {FILL_CONFLICTS} WHERE window_start = %(window_start)s",
    f"DELETE FROM {FILL_RETIRED} WHERE window_start = %(window_start)s",
)
SQL_NEW_REJECTS = f"""
INSERT INTO {FILL_REJECTS} (window_start, {", ".join(REJECT_FIELDS)})
SELECT %(window_start)s, {", ".join(REJECT_FIELDS)} FROM stage_rejects
ON CONFLICT DO NOTHING"""
SQL_NEW_CONFLICTS = f"""
INSERT INTO {FILL_CONFLICTS}
    (window_start, source_file, line_no, wallet, trade_id, conflicts_with, differing_fields)
SELECT %(window_start)s, source_file, line_no, wallet, trade_id, conflicts_with, differing_fields
FROM rb_conflicts ON CONFLICT DO NOTHING"""
SQL_SAVE_WINDOW = f"""
INSERT INTO {FILL_WINDOWS} (window_start, source, extent, summary)
VALUES (%(window_start)s, %(source)s, %(extent)s, %(summary)s)
ON CONFLICT (window_start) DO UPDATE SET source = EXCLUDED.source, extent = EXCLUDED.extent,
    summary = EXCLUDED.summary, recorded_at = now()"""
SQL_AUDIT = f"""
INSERT INTO {FILL_REBUILDS}
    (rebuild_id, window_start, kind, undoes, reason, version_from, version_to, changes,
     previous_window, previous_rejects, previous_conflicts, previous_retired)
VALUES (%(rebuild_id)s, %(window_start)s, %(kind)s, %(undoes)s, %(reason)s, %(version_from)s,
        %(version_to)s, %(changes)s, %(previous_window)s, %(previous_rejects)s,
        %(previous_conflicts)s, %(previous_retired)s)"""
SQL_OFFSET = f"""
INSERT INTO {COUNTER_OFFSETS} (metric, label, amount, cause) VALUES (%s, %s, %s, %s)"""

# The digest of every row stored under a window, whatever its partition (the undo's check that
# the window is still as the rebuild left it, and its audit).
SQL_WINDOW_DIGEST = SQL_DIGEST.format(
    hash=STORED_HASH, source=f"{FILL_EVENTS} e WHERE e.window_start = %(window_start)s"
)

# -- undo -------------------------------------------------------------------------------------
# The keys the rebuild revised in the window (its index on rebuild and window), then the rows
# stored under them now: a hash join on an analyzed temporary table (the revisions just written
# have no statistics yet, and a nested loop over a million of them never ends).
SQL_UNDO_KEYS = f"""
INSERT INTO rb_keys SELECT trade_id, wallet FROM {FILL_REVISIONS}
WHERE rebuild_id = %(undoes)s AND window_start = %(window_start)s"""
SQL_UNDO_STORED = f"""
INSERT INTO rb_stored SELECT e.* FROM {FILL_EVENTS} e
JOIN rb_keys k ON k.trade_id = e.trade_id AND k.wallet = e.wallet
WHERE e.window_start = %(window_start)s"""
# The superseded rows back, whole: the revision's key and window, its old_ columns.
_OLD_ROW = ", ".join(
    f"r.{OLD_ROW_COLUMNS[c]}" if c in OLD_ROW_COLUMNS else f"r.{c}"
    for c in fill_events.columns.keys()
)
SQL_UNDO_ROWS = f"""
INSERT INTO rb_rows ({_ALL_COLUMNS})
SELECT {_OLD_ROW} FROM {FILL_REVISIONS} r
WHERE r.rebuild_id = %(undoes)s AND r.window_start = %(window_start)s AND r.change <> 'added'"""
SQL_RESTORE_REJECTS = f"""
INSERT INTO {FILL_REJECTS} SELECT * FROM jsonb_populate_recordset(NULL::{FILL_REJECTS}, %s)"""
SQL_RESTORE_CONFLICTS = f"""
INSERT INTO {FILL_CONFLICTS} SELECT * FROM jsonb_populate_recordset(NULL::{FILL_CONFLICTS}, %s)"""
SQL_RESTORE_RETIRED = f"""
INSERT INTO {FILL_RETIRED} SELECT * FROM jsonb_populate_record(NULL::{FILL_RETIRED}, %s)"""
SQL_RESTORE_WINDOW = f"""
INSERT INTO {FILL_WINDOWS} SELECT * FROM jsonb_populate_record(NULL::{FILL_WINDOWS}, %s)
ON CONFLICT (window_start) DO UPDATE SET source = EXCLUDED.source, extent = EXCLUDED.extent,
    summary = EXCLUDED.summary, recorded_at = EXCLUDED.recorded_at"""
