"""Figure r: a rebuild of one window (dry run, apply, undo) against its first recording.

The window (``--fills`` fills, two rows each) is recorded into an empty database, timed: the
reference. A second database holds the same window as an older release left it: recorded, then
every maker row's fee set to the taker's (the fee rule ``tests/helpers/rebuild.py`` fixes), so
half the rows differ in one field. The dry run, the apply and the undo of that window are then
timed, each in process on the path ``competition-pipeline rebuild`` runs. Target: each within 2x
the first recording.
"""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from competition_harness.bench.common import BENCH_WINDOW, Databases
from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.recording.fill_events import record_window
from competition_pipeline.recording.rebuild import rebuild_windows, undo_rebuild
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools.log import log

_OLDER_RULE = (
    "UPDATE competition_fill_events m SET fee = t.fee FROM competition_fill_events t"
    " WHERE m.role = 'maker' AND t.role = 'taker' AND t.trade_id = m.trade_id"
)


def _timed(what: str, work) -> tuple[float, object]:
    log(f"r. {what}")
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def rebuild_figure(databases: Databases, journal: Path) -> dict:
    """Seconds and ratios to the first recording of the dry run, the apply and the undo."""
    source = JournalSource(journal)
    reference = CompetitionStore(databases.new("r_first"))
    reference.ensure_schema()
    first, report = _timed(
        "first recording", lambda: record_window(source, reference, BENCH_WINDOW)
    )
    store = CompetitionStore(databases.new("r_rebuild"))
    store.ensure_schema()
    record_window(source, store, BENCH_WINDOW)
    with closing(store.connect()) as conn:  # the rows as the older release left them
        conn.execute(_OLDER_RULE)
        conn.commit()
    dry, dry_report = _timed("dry run", lambda: rebuild_windows(source, store, [BENCH_WINDOW]))
    apply, applied = _timed(
        "apply",
        lambda: rebuild_windows(source, store, [BENCH_WINDOW], apply=True, reason="bench r"),
    )
    undo, _ = _timed("undo", lambda: undo_rebuild(store, applied.rebuild_id, reason="bench r"))
    (diff,) = dry_report.windows
    return {
        "rows": report.rows_inserted,
        "rows_changed": diff.changed,
        "first_recording_seconds": first,
        "dry_run_seconds": dry,
        "apply_seconds": apply,
        "undo_seconds": undo,
        "dry_run_over_first": dry / first,
        "apply_over_first": apply / first,
        "undo_over_first": undo / first,
    }


def r_table(r: dict) -> str:
    changed = f"{r['rows_changed']:,} rows changed"
    lines = [
        f"{'r. rebuild of one window':<44} {'rows':>10} {'seconds':>9} {'x first':>10}",
        f"{'   first recording (reference)':<44} {r['rows']:>10,}"
        f" {r['first_recording_seconds']:>9.2f} {1:>10.2f}",
    ]
    for what, key in (("dry run", "dry_run"), ("apply", "apply"), ("undo", "undo")):
        label = f"   {what} ({changed})"
        lines.append(
            f"{label:<44} {'':>10} {r[key + '_seconds']:>9.2f} {r[key + '_over_first']:>10.2f}"
        )
    return "\n".join(lines)
