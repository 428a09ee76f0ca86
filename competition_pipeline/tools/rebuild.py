"""``competition-pipeline rebuild`` (dry run, ``--apply``, ``--undo``) and ``status``.

A dry run connects as the recorder (COMPETITION_DATABASE_URL, else the running local start's);
an apply or an undo replaces rows, so it connects with COMPETITION_OWNER_DATABASE_URL (the
tables' owner) when that is set, and otherwise fails at once naming it. The journal is
FILL_JOURNAL_DIR, else the local start's ``.var/journal``; FILL_SOURCE=nats reads the stream.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from competition_pipeline.tools.local_state import database_url, state_dir
from competition_pipeline.tools.log import log

#: The most windows one rebuild command takes (a leap year of hours): a longer range is split
#: into several commands, each previewed (a rebuild reads and compares every window it names).
MAX_REBUILD_WINDOWS = 366 * 24


def _windows(first: str, last: str) -> list:
    from competition_pipeline.fills.windows import Window, windows_between

    try:
        start, end = Window.from_key(first), Window.from_key(last)
        end_time = end.end  # the hour after the last: past year 9999 it does not exist
    except (ValueError, OverflowError) as exc:
        raise SystemExit(f"error: {exc} (partition keys are YYYY-MM-DD-HH:00, UTC)") from None
    if end.start < start.start:
        raise SystemExit(f"error: --to {last} is before --from {first}")
    hours = int((end_time - start.start).total_seconds() // 3600)
    if hours > MAX_REBUILD_WINDOWS:
        raise SystemExit(
            f"error: --from {first} --to {last} is {hours:,} windows; a rebuild takes at most"
            f" {MAX_REBUILD_WINDOWS:,} (a year): split the range"
        )
    return windows_between(start.start, end_time)


def _source():
    """The source the code location reads (its resource, from the same settings), the journal
    defaulting to the local start's."""
    from competition_pipeline import settings
    from competition_pipeline.defs.resources import FillSourceResource

    resource = FillSourceResource.from_settings(settings.load())
    root = os.environ.get("FILL_JOURNAL_DIR") or str(state_dir() / "journal")
    return resource.model_copy(update={"root": root}).source()


def _store(*, owner: bool):
    from competition_pipeline.store.database import CompetitionStore

    url = os.environ.get("COMPETITION_OWNER_DATABASE_URL") if owner else None
    store = CompetitionStore(url or database_url())
    store.ensure_schema()
    return store


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def cmd_rebuild(args: argparse.Namespace) -> int:
    from competition_pipeline.recording.rebuild import (
        RebuildError,
        rebuild_windows,
        undo_rebuild,
    )
    from competition_pipeline.store.database import StoreError

    try:
        if args.undo:
            reason = args.reason or f"undo of {args.undo} from the command line"
            done = undo_rebuild(_store(owner=True), args.undo, reason=reason)
            if args.json:
                print(json.dumps({"undone": args.undo, "windows": done}, indent=2))
            else:
                for window in done:
                    log(f"{window['window']}: restored as before {args.undo} ({window['rows']})")
            return 0
        if not (args.first and args.last):
            raise SystemExit("error: give --from HOUR --to HOUR (or --undo REBUILD_ID)")
        windows = _windows(args.first, args.last)
        report = rebuild_windows(
            _source(),
            _store(owner=args.apply),
            windows,
            apply=args.apply,
            reason=args.reason,
            sample=args.samples,
        )
    except (RebuildError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 1 if report.refused else 0
    verb = "applied" if report.applied else "dry run: nothing written"
    print(f"rebuild {report.rebuild_id} ({verb}), {len(windows)} windows in {report.seconds:.2f}s")
    if report.windows:
        _print_table(report.COLUMNS, report.table())
    for w in report.windows:
        for sample in w.samples:
            print(f"  {w.window.key} {sample.describe()}")
    for change in report.standings:
        print(f"  standings {change.describe()}")
    for why in report.refused.values():
        print(f"refused: {why}", file=sys.stderr)
    changed = report.changed
    if not report.applied and changed:
        first, last = changed[0].window.key, changed[-1].window.key
        print(
            f"{len(changed)} windows would change; to apply: competition-pipeline rebuild"
            f" --from {first} --to {last} --apply --reason '...'"
            + (" (an apply refuses a range holding a refused window)" if report.refused else "")
        )
    elif report.applied:
        print(
            f"{len(changed)} windows replaced; undo: competition-pipeline rebuild --undo"
            f" {report.rebuild_id}"
        )
    return 1 if report.refused else 0


def cmd_status(args: argparse.Namespace) -> int:
    from competition_pipeline.recording.fill_events import RECORDING_VERSION
    from competition_pipeline.store.database import CompetitionStore

    status = CompetitionStore(database_url()).history_status(RECORDING_VERSION)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"recording version (this code): {RECORDING_VERSION}")
    for version, count in status["windows_by_version"].items():
        print(f"  windows recorded under version {version}: {count}")
    if status["older"]:
        print("  recorded under an older version (rebuild to re-derive them):")
        for first, last, count in status["older"]:
            print(f"    {first} .. {last} ({count} windows)")
    print(f"retired windows: {sum(n for _, _, n in status['retired'])}")
    for first, last, count in status["retired"]:
        print(f"    {first} .. {last} ({count} windows)")
    for rebuild in status["rebuilds"]:
        print(
            f"  {rebuild['kind']} {rebuild['rebuild_id']} at {rebuild['applied_at']}:"
            f" {rebuild['windows']} windows, {rebuild['reason']!r}"
            + (f", undone by {rebuild['undone_by']}" if rebuild["undone_by"] else "")
        )
    return 0
