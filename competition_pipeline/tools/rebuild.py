"""``competition-pipeline rebuild`` (dry run, ``--apply``, ``--undo``) and ``status``.

A dry run connects as the recorder (COMPETITION_DATABASE_URL, else the running local start's);
an apply or an undo replaces rows, so it connects with COMPETITION_OWNER_DATABASE_URL (the
tables' owner) when that is set, and otherwise fails at once naming it. The journal is
FILL_JOURNAL_DIR, else the local start's ``.var/journal``; FILL_SOURCE=nats reads the stream.
A range holding a window that may still be written (the open hour, or one closed less than
FILL_FOLLOW_LATENESS_SECONDS ago: its follower is committing to it) is refused, dry run or apply.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from competition_pipeline.tools.local_state import database_url, state_dir


def plural(count: int, noun: str) -> str:
    """``1 window``, ``2 windows``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _rows_text(rows: dict[str, int]) -> str:
    """An undo's row counts by change (``{'changed': 3}``) as words: ``3 rows changed back``."""
    if not rows:
        return "no row changed"
    return ", ".join(f"{plural(n, 'row')} {change} back" for change, n in sorted(rows.items()))


def _refuse_open_windows(windows: list) -> None:
    """Exit naming the first window a follower may still write (dry run and apply alike: its
    diff would list fills not committed yet, and an apply would race the follower)."""
    from competition_pipeline import settings
    from competition_pipeline.fills.windows import still_open

    lateness = dt.timedelta(seconds=settings.load().follow_lateness_seconds)
    open_windows = still_open(windows, dt.datetime.now(dt.UTC), lateness)
    if open_windows:
        window = open_windows[0]
        raise SystemExit(
            f"error: window {window.key} is still open: its follower records it until"
            f" {window.end + lateness:%Y-%m-%d %H:%M:%S} UTC; rebuild it after that"
            " (nothing was read or written)"
        )


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
                    print(
                        f"{window['window']}: restored as it was before {args.undo}"
                        f" ({_rows_text(window['rows'])})"
                    )
                print(f"undo of {args.undo}: {plural(len(done), 'window')} restored")
            return 0
        if not (args.first and args.last):
            raise SystemExit("error: give --from HOUR --to HOUR (or --undo REBUILD_ID)")
        windows = _windows(args.first, args.last)
        _refuse_open_windows(windows)
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
    print(
        f"rebuild {report.rebuild_id} ({verb}), {plural(len(windows), 'window')}"
        f" in {report.seconds:.2f}s"
    )
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
            f"{plural(len(changed), 'window')} would change; to apply: competition-pipeline"
            f" rebuild --from {first} --to {last} --apply --reason '...'"
            + (" (an apply refuses a range holding a refused window)" if report.refused else "")
        )
    elif not report.applied:
        print(
            f"nothing would change: {plural(len(report.windows), 'window')} checked, each derives"
            " as stored" + (f", {len(report.refused)} refused" if report.refused else "")
        )
    elif changed:
        print(
            f"{plural(len(changed), 'window')} replaced; undo: competition-pipeline rebuild"
            f" --undo {report.rebuild_id}"
        )
    else:
        print("nothing replaced: every window already derives as stored (no undo needed)")
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
            print(f"    {first} .. {last} ({plural(count, 'window')})")
    print(f"retired windows: {sum(n for _, _, n in status['retired'])}")
    for first, last, count in status["retired"]:
        print(f"  {first} .. {last} ({plural(count, 'window')})")
    print(f"latest rebuilds and undos: {len(status['rebuilds']) or 'none'}")
    for rebuild in status["rebuilds"]:
        print(
            f"  {rebuild['kind']} {rebuild['rebuild_id']} at"
            f" {rebuild['applied_at'].astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC:"
            f" {plural(rebuild['windows'], 'window')}, {rebuild['reason']!r}"
            + (f", undone by {rebuild['undone_by']}" if rebuild["undone_by"] else "")
        )
    return 0
