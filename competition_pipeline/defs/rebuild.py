"""``competition_fill_rebuild_job``: the rebuild (``recording/rebuild.py``) from the Dagster UI.

Partitioned like ``competition_fill_events``, so a range is launched as a backfill from the UI
(Materialize... is the asset's; this is the job's Launchpad or its partitions' Backfill). Config
``mode: {dry_run: {}}`` by default: the run is a dry run whose diff is a table in the step's
output metadata and in the run's log, and nothing is written. ``mode: {apply: {reason: ...}}``
replaces the changed windows: the reason is required (Dagster refuses to launch an apply without
one; a blank one fails the run before anything is read). The run connects with
``owner_database``, the tables' owner (the recorder may not replace rows), under the run's id,
which ``competition-pipeline rebuild --undo`` takes; each replaced window is reported as a
materialization of its partition of ``competition_fill_events`` (recording version and rebuild id
in its metadata), so the partition view shows the new version and the standings sensor sees it.
A window that may still be written (the open hour, or one closed less than
``FILL_FOLLOW_LATENESS_SECONDS`` ago) is refused: its follower is committing to it. The op's
output is of type Nothing: the diff travels as its metadata, nothing goes to an I/O manager.
A failed run of this job is not a recording failure (``defs/runs.py``, ``KIND_TAG``).
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from competition_pipeline.defs.failures import failing_step, refused
from competition_pipeline.defs.partitions import FILL_EVENTS_KEY, fill_partitions
from competition_pipeline.defs.resources import CompetitionDatabase, FillSourceResource
from competition_pipeline.defs.runs import KIND_TAG
from competition_pipeline.fills.windows import still_open, windows_between
from competition_pipeline.recording.rebuild import RebuildReport, rebuild_windows
from competition_pipeline.settings import Settings

#: Dagster's tag of the code version a materialization was computed with (the asset's
#: ``code_version``, ``str(RECORDING_VERSION)``); not exported by ``dagster`` itself.
CODE_VERSION_TAG = "dagster/code_version"


class DryRun(dg.Config):
    """Diff the windows against what the current rules derive; write nothing."""

    kind: Literal["dry_run"] = "dry_run"


class Apply(dg.Config):
    """Replace the changed windows (audited, undoable)."""

    kind: Literal["apply"] = "apply"
    reason: str = Field(description="Why: audited with every replaced row (required).")


class RebuildConfig(dg.Config):
    """The run's config: a dry run, or an apply with its reason. A Dagster selector, so an apply
    without a reason is refused when the run is launched (Dagster's config validation; a
    partitioned job can have no config mapping to refuse a blank one there too: the op refuses it
    before reading anything)."""

    mode: DryRun | Apply = Field(default=DryRun(), discriminator="kind")

    @property
    def apply(self) -> bool:
        return isinstance(self.mode, Apply)

    @property
    def reason(self) -> str | None:
        return self.mode.reason if isinstance(self.mode, Apply) else None


def diff_markdown(report: RebuildReport) -> str:
    """The diff as a Markdown table (the run's metadata), with its samples and standings."""
    lines = [
        "| " + " | ".join(report.COLUMNS) + " |",
        "|" + "---|" * len(report.COLUMNS),
        *("| " + " | ".join(row) + " |" for row in report.table()),
    ]
    for window in report.windows:
        lines += [f"- `{window.window.key}` {sample.describe()}" for sample in window.samples]
    lines += [f"- standings {change.describe()}" for change in report.standings]
    lines += [f"- refused: {why}" for why in report.refused.values()]
    return "\n".join(lines)


def _metadata(report: RebuildReport) -> dict[str, Any]:
    return {
        "rebuild_id": report.rebuild_id,
        "applied": report.applied,
        "diff": dg.MetadataValue.md(diff_markdown(report)),
        "windows": len(report.windows),
        "windows_changed": len(report.changed),
        "rows_added": sum(w.added for w in report.windows),
        "rows_removed": sum(w.removed for w in report.windows),
        "rows_changed": sum(w.changed for w in report.windows),
        "standings_changes": len(report.standings),
        "seconds": round(report.seconds, 3),
    }


def open_hour_refusal(windows: list, now: dt.datetime, lateness: dt.timedelta) -> str | None:
    """Why a rebuild of ``windows`` is refused, if one of them may still be written: the open
    hour's follower is committing to it, so a diff would list fills it has not committed yet and
    an apply would race it (and its undo would then be refused)."""
    open_windows = still_open(windows, now, lateness)
    if not open_windows:
        return None
    window = open_windows[0]
    until = window.end + lateness
    return (
        f"window {window.key} is still open: its follower records it until"
        f" {until:%Y-%m-%d %H:%M:%S} UTC; rebuild it after that (nothing was rebuilt)"
    )


def build_rebuild_job(settings: Settings) -> dg.JobDefinition:
    """The rebuild job over ``settings``' partitions."""

    lateness = dt.timedelta(seconds=settings.follow_lateness_seconds)

    @dg.op(
        name="rebuild_fill_windows",
        description="Re-derive the run's windows from the journal with the current rules and"
        " diff them against the stored rows; with apply, replace them (audited, undoable).",
        # The effect is in the database; the output carries only the diff's metadata, and an
        # output of type Nothing is never handed to an I/O manager (nothing pickled to disk).
        out=dg.Out(dg.Nothing),
    )
    def rebuild_fill_windows(
        context: dg.OpExecutionContext,
        config: RebuildConfig,
        database: CompetitionDatabase,
        owner_database: CompetitionDatabase,
        fill_source: FillSourceResource,
    ) -> Iterator[dg.AssetMaterialization | dg.Output]:
        time_window = context.partition_time_window
        windows = windows_between(time_window.start, time_window.end)
        label = windows[0].key if len(windows) == 1 else f"{windows[0]}..{windows[-1]}"
        if config.apply and not (config.reason or "").strip():
            raise refused(
                "mode apply needs a reason that says why (it is audited with every"
                " replaced row); nothing was rebuilt"
            )
        open_hour = open_hour_refusal(windows, dt.datetime.now(dt.UTC), lateness)
        if open_hour:
            raise refused(open_hour)
        with failing_step(f"window {label} not rebuilt (nothing of it written)"):
            report = rebuild_windows(
                fill_source.source(),
                (owner_database if config.apply else database).store(),
                windows,
                apply=config.apply,
                reason=config.reason,
                rebuild_id=context.run_id,
            )
        context.log.info(
            f"rebuild {'applied' if report.applied else 'dry run'}:\n"
            + ("\n".join("  ".join(row) for row in report.table()) or "no window")
        )
        for why in report.refused.values():
            context.log.warning(why)
        if report.applied:
            for window in report.changed:
                yield dg.AssetMaterialization(
                    asset_key=FILL_EVENTS_KEY,
                    partition=window.window.key,
                    description=f"rebuilt by {report.rebuild_id}: {config.reason}",
                    # The code version the rows now derive from, as the asset's own runs record
                    # it: without it the partition has no provenance, and a later release that
                    # bumps RECORDING_VERSION would never show it "Unsynced".
                    tags={CODE_VERSION_TAG: str(window.version_to)},
                    metadata={
                        "rebuild_id": report.rebuild_id,
                        "recording_version": window.version_to,
                        "recording_version_before": window.version_from or 0,
                        "rows_added": window.added,
                        "rows_removed": window.removed,
                        "rows_changed": window.changed,
                        "dagster/partition_row_count": window.rows_derived,
                    },
                )
        if report.refused and not report.windows:
            raise refused("; ".join(report.refused.values()))
        yield dg.Output(None, metadata=_metadata(report))

    @dg.job(
        name="competition_fill_rebuild_job",
        partitions_def=fill_partitions(settings),
        executor_def=dg.in_process_executor,
        description="Rebuild windows of competition_fill_events with the current recording rules:"
        " a dry run's diff by default; apply: true and a reason replace them (audited, undo with"
        " competition-pipeline rebuild --undo RUN_ID).",
        tags={KIND_TAG: "rebuild"},
    )
    def competition_fill_rebuild_job() -> None:
        rebuild_fill_windows()

    return competition_fill_rebuild_job
