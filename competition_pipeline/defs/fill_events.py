"""The ``competition_fill_events`` asset: one hourly window of fills recorded per partition."""

import threading
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from competition_pipeline.defs.checks import WindowChecks, selected_checks
from competition_pipeline.defs.failures import failing_step, refused
from competition_pipeline.defs.hosts import check_deployment, deployment_op_tags, tag_host
from competition_pipeline.defs.partitions import (
    DATABASE_POOL,
    fill_freshness_policy,
    fill_partitions,
    fill_retry_policy,
)
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.defs.runs import holding_run_lock
from competition_pipeline.defs.stops import StopSignals, mark_stopped
from competition_pipeline.defs.tables import column_schema
from competition_pipeline.fills.journal import SYMLINK_NOTE
from competition_pipeline.fills.windows import Window, windows_between
from competition_pipeline.recording.fill_events import (
    MAX_STORED_REJECTS,
    RECORDING_VERSION,
    WindowReport,
    record_windows,
)
from competition_pipeline.settings import Settings
from competition_pipeline.store.database import FILL_EVENTS, fill_events

# (trade_id, wallet) is the row's key; fill_ts is in the primary key only because a partitioned
# table's key must hold its partition key.
FILL_EVENTS_SCHEMA = column_schema(
    fill_events, "(trade_id, wallet) unique across every month (registry competition_fill_keys)"
)


def _journal_data(report: WindowReport) -> bool | None:
    """Whether the journal holds any segment for the window (None for the stream): an hour that is
    missing from the journal is not an hour with no trades."""
    return report.segments > 0 if report.stream_complete is None else None


def _open(report: WindowReport, now: float) -> bool:
    return Window.from_key(report.window).end.timestamp() > now


def report_metadata(report: WindowReport, now: float | None = None) -> dict[str, Any]:
    """Per-window materialization metadata; numbers are plain ints/floats so the UI plots them.

    A number is present only where it means what its name says: ``rows_per_second`` only when
    this run inserted rows (an unchanged re-run is not a spike), ``lag_seconds`` only for the hour
    in progress (a closed hour's newest fill is hours old by design).
    """
    now = time.time() if now is None else now
    metadata: dict[str, Any] = {
        "dagster/table_name": FILL_EVENTS,
        "window": report.window,
        "source": report.source,
        "lines_read": report.lines_read,
        "fills_read": report.fills_read,
        "fills_recorded_or_present": report.fills_recorded_or_present,
        "rows_inserted": report.rows_inserted,
        "rows_already_present": report.rows_already_present,
        "skipped_messages": report.skipped_messages,
        "rejects": report.rejects,
        "rejects_new": report.rejects_new,
        "rejects_not_stored": report.rejects_not_stored,
        "conflicts": report.conflicts,
        "incomplete_tails": report.incomplete_tails,
        "segments": report.segments,
        "bytes_read": report.bytes_read,
        "incremental": report.incremental,
        "seconds": round(report.seconds, 3),
        "accounting_balanced": report.balanced(),
        "unchanged": report.unchanged,
        # The rules that turned the journal into these rows (the asset's code version).
        "recording_version": RECORDING_VERSION,
        "open_hour": _open(report, now),
    }
    if report.rows_stored is not None:  # the window's rows in the table (Dagster's row count)
        metadata["dagster/partition_row_count"] = report.rows_stored
    if report.rows_inserted > 0 and report.seconds > 0:
        metadata["rows_per_second"] = round(report.rows_inserted / report.seconds, 1)
    if report.newest_fill_ms is not None and metadata["open_hour"]:
        metadata["lag_seconds"] = round(now - report.newest_fill_ms / 1000, 1)
    journal_data = _journal_data(report)
    if journal_data is not None:
        metadata["journal_data"] = journal_data
    if report.stream_complete is not None:
        metadata["stream_complete"] = report.stream_complete
    if report.rewritten_segments:
        metadata["rewritten_segments"] = _name_list(report.rewritten_segments)
    if report.ignored_files:
        metadata["ignored_files"] = _name_list(report.ignored_files)
    return metadata


def _name_list(names: list[str]) -> dg.MetadataValue:
    """Journal file names as plain text, one a line: a name is the engine's (or anyone's who can
    write the journal), so it is never rendered as Markdown (a ``](javascript:...)`` stays text)."""
    return dg.MetadataValue.text("\n".join(names))


def _record(
    windows: list[Window],
    database: CompetitionDatabase,
    fill_source: FillSourceResource,
    policy: RecordingPolicy,
) -> Iterator[WindowReport]:
    """Record windows in order; a source or database error becomes a failed step naming the
    window it stopped at (the windows before it are committed)."""
    done = 0

    def stopped_at() -> str:  # the window being recorded when the failure came
        window = windows[min(done, len(windows) - 1)]
        return f"window {window.key} not recorded (nothing of it committed)"

    with failing_step(stopped_at):
        source, store = fill_source.source(), database.store()
        for report in record_windows(source, store, windows, reject_budget=policy.reject_budget()):
            done += 1
            yield report


def _warn_ignored(context: dg.AssetExecutionContext, report: WindowReport) -> None:
    for name in report.ignored_files:
        if name.endswith(SYMLINK_NOTE):
            context.log.warning(
                f"ignored {name.removesuffix(SYMLINK_NOTE)!r}: a symbolic link is not part of the"
                " journal (contract, section 3); nothing was read through it"
            )
        else:
            context.log.warning(f"ignored {name!r}: not a journal segment (contract, section 3)")
    if report.rejects_not_stored:
        context.log.warning(
            f"window {report.window}: {report.rejects} rejects, {report.rejects_not_stored} of"
            f" them counted but not stored (at most {MAX_STORED_REJECTS} are kept a window)"
        )
    for name in report.rewritten_segments:
        context.log.warning(
            f"{name} changed before its committed offset (rewritten or shrunk; segments are"
            " append-only): the window was read again in full"
        )


def _missing_from_journal(report: WindowReport) -> bool:
    """A closed hour without any segment (the open hour may simply have none yet)."""
    return _journal_data(report) is False and not _open(report, time.time())


def _warn_missing(context: dg.AssetExecutionContext, windows: list[str]) -> None:
    if windows:
        which = (
            ", ".join(windows)
            if len(windows) <= 5
            else f"{len(windows)} windows from {windows[0]} to {windows[-1]}"
        )
        context.log.warning(
            f"no journal data for {which} (no segment in the date=/hour= directory): missing from"
            " the journal, which is not the same as an hour without trades; recorded as 0 rows,"
            " re-run once the journal has it"
        )


def retired_message(windows: list[str]) -> str:
    which = (
        windows[0] if len(windows) == 1 else f"{len(windows)} windows {windows[0]}..{windows[-1]}"
    )
    return (
        f"{which} retired by competition_fill_retention_job (rows dropped): not recorded again."
        " Restoring a retired window is an explicit, audited rebuild: competition-pipeline"
        f" rebuild --from {windows[0]} --to {windows[-1]} (a dry run), then with --apply --reason"
    )


def log_report(context: dg.AssetExecutionContext, report: WindowReport) -> None:
    _warn_ignored(context, report)
    _warn_missing(context, [report.window] if _missing_from_journal(report) else [])
    context.log.info(
        f"window {report.window}: {report.fills_read} fills, {report.rows_inserted} rows inserted, "
        f"{report.rows_already_present} already present, {report.rejects} rejects, "
        f"{report.conflicts} conflicts, {report.skipped_messages} skipped "
        f"in {report.seconds:.2f}s"
    )


def build_fill_asset(settings: Settings) -> dg.AssetsDefinition:
    """The ``competition_fill_events`` asset, its partitions and policies from ``settings``."""

    @dg.asset(
        name="competition_fill_events",
        partitions_def=fill_partitions(settings),
        # The recording rules' version: bumped when the same journal bytes give other rows, so
        # the UI marks the asset's code changed; windows recorded before it are listed by
        # `competition-pipeline status` and re-derived only by a rebuild (never by a re-run).
        code_version=str(RECORDING_VERSION),
        # A backfill of any date range is one run; the run records its windows in order and commits
        # each on its own, so a failure part way keeps every window finished before it.
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=fill_retry_policy(settings),
        pool=DATABASE_POOL,
        # The code server's code and rule settings: a worker elsewhere compares its own (hosts.py).
        op_tags=deployment_op_tags(settings),
        freshness_policy=fill_freshness_policy(settings),
        group_name="competition",
        kinds={"postgres"},
        owners=["team:trading-competition"],
        metadata={
            "dagster/table_name": FILL_EVENTS,
            "dagster/column_schema": column_schema(fill_events),
        },
        # Ranged runs report each window as its own materialization event instead of one output.
        output_required=False,
        description=(
            "Every fill of the hour, one row per (trade_id, wallet), in table"
            " competition_fill_events; bad lines are quarantined in competition_fill_rejects,"
            " conflicting duplicates in competition_fill_conflicts. Re-running a window is"
            " idempotent."
        ),
    )
    def competition_fill_events(
        context: dg.AssetExecutionContext,
        database: CompetitionDatabase,
        fill_source: FillSourceResource,
        policy: RecordingPolicy,
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation]:
        check_deployment(context, settings)
        host = tag_host(context)
        signals = StopSignals()
        with holding_run_lock(context, database, "not recorded (nothing of it committed)"):
            yield from signals.guard(
                _materialize(context, database, fill_source, policy, host, signals.stop)
            )
            if signals.received:
                why = f"stopped: {', '.join(signals.received)}"
                mark_stopped(context, why)
                context.log.info(f"{why}: every window recorded before it is committed")

    return competition_fill_events


def _materialize(
    context: dg.AssetExecutionContext,
    database: CompetitionDatabase,
    fill_source: FillSourceResource,
    policy: RecordingPolicy,
    host: str,
    stop: threading.Event,
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """One window, or a range (a backfill) window after window; on a stop signal a range ends
    after the window in progress has committed (one window is short: it completes)."""
    time_window = context.partition_time_window
    windows = windows_between(time_window.start, time_window.end)
    if len(windows) == 1:
        (report,) = _record(windows, database, fill_source, policy)
        if report.retired:
            raise refused(retired_message([report.window]))
        log_report(context, report)
        yield dg.MaterializeResult(metadata={**report_metadata(report), "host": host})
        return
    # A partition range (a backfill): one materialization event per window, as each commits, so
    # the UI shows every window's counts and a failure leaves the finished windows materialized.
    # The run log gets a progress line per day, not per window (each event is a storage write).
    context.log.info(f"recording {len(windows)} windows {windows[0]} .. {windows[-1]}")
    # Without an output Dagster skips the check steps of a ranged run: each window's checks are
    # evaluated here once it has committed, as events for its partition (defs/checks.py).
    checks = WindowChecks(database, fill_source, policy, instance=context.instance)
    check_names = selected_checks(context)
    started = time.perf_counter()
    rows = 0
    missing: list[str] = []  # warned about with the progress line, not one line per window
    retired: list[str] = []
    # Each window's checks run as it commits; their events are yielded with the progress line,
    # tied to their windows' materializations by one event-log lookup per batch (and yielded
    # before a failure part way is raised).
    evaluated: list[tuple[Window, list]] = []
    with checks.shared_connection():
        try:
            for done, report in enumerate(_record(windows, database, fill_source, policy), start=1):
                if report.retired:
                    retired.append(report.window)
                    continue
                _warn_ignored(context, report)
                if _missing_from_journal(report):
                    missing.append(report.window)
                # Yielded, not context.log_event(): logged events are buffered until the next
                # yield, so a failure later in the range would drop the events of windows
                # already committed.
                yield dg.AssetMaterialization(
                    asset_key=context.asset_key,
                    partition=report.window,
                    metadata={**report_metadata(report), "host": host},
                )
                window = Window.from_key(report.window)
                evaluated.append((window, checks.outcomes(check_names, window)))
                rows += report.rows_inserted
                if done % 24 == 0 or done == len(windows):
                    yield from checks.evaluations_of(evaluated)
                    evaluated.clear()
                    context.log.info(
                        f"{done}/{len(windows)} windows recorded (up to {report.window}),"
                        f" {rows} rows inserted in {time.perf_counter() - started:.1f}s"
                    )
                    _warn_missing(context, missing)
                    missing.clear()
                if stop.is_set() and done < len(windows):
                    yield from checks.evaluations_of(evaluated)
                    evaluated.clear()
                    context.log.info(
                        f"{done}/{len(windows)} windows recorded (up to {report.window}) when"
                        " the stop came; the rest are requested again"
                    )
                    break
        except Exception:
            try:
                yield from checks.evaluations_of(evaluated)
            except Exception as flush_error:  # noqa: BLE001 (the first failure is the one raised)
                context.log.warning(
                    f"the checks of {len(evaluated)} committed windows were not reported:"
                    f" {flush_error}"
                )
            raise
        yield from checks.evaluations_of(evaluated)
    if retired:
        context.log.warning(retired_message(retired))
    if check_names:
        # Said here because Dagster logs "Skipping step ... due to skipped dependencies" for each
        # check step next, which reads like checks that never ran.
        context.log.info(
            f"checks {', '.join(check_names)} evaluated in this step for each of the"
            f" {len(windows)} windows (each check's Partitions tab shows every window's result);"
            " the check steps Dagster skips next have nothing left to evaluate"
        )
