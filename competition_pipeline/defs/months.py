"""Maintenance of the month partitions, as Dagster jobs (the logic is in :mod:`months`).

* ``competition_months_job`` (schedule ``competition_months_daily``, on by default): creates this
  month's partition and the next two. The loader creates a missing month itself; this keeps that
  table-wide lock out of the loads' way.
* ``competition_fill_retention_job`` (schedule ``competition_fill_retention_monthly``, off by
  default: it drops data): detaches, optionally archives, and drops months older than
  ``older_than_months``, refusing months a running competition covers. It needs DDL rights: its
  resource ``owner_database`` reads ``COMPETITION_OWNER_DATABASE_URL`` when set (the
  ``competition_owner`` role; the recorder's URL otherwise, which then fails with
  ``InsufficientPrivilege``).
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from competition_pipeline.defs.resources import CompetitionDatabase
from competition_pipeline.settings import Settings
from competition_pipeline.store import months


@dg.op(description="Create this month's partition of competition_fill_events and the next two.")
def create_months_ahead(context: dg.OpExecutionContext, database: CompetitionDatabase) -> None:
    created = months.create_ahead(database.store(), months=2)
    context.log.info(f"months created: {', '.join(map(str, created)) or 'none (all present)'}")


@dg.job(executor_def=dg.in_process_executor)
def competition_months_job() -> None:
    create_months_ahead()


competition_months_daily = dg.ScheduleDefinition(
    name="competition_months_daily",
    job=competition_months_job,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:17 UTC: make sure this month's partition and the next two exist.",
)


def build_retention(config: Settings) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """``competition_fill_retention_job`` and its monthly schedule; the job's config defaults
    (shown in the Launchpad) are ``config``'s, the settings ``build_defs`` was given."""

    class RetentionConfig(dg.Config):
        older_than_months: int = Field(
            default=config.retention_months,
            description="Drop months that ended before the first day of the month this many"
            " months ago (FILL_RETENTION_MONTHS, default 13).",
        )
        archive_dir: str = Field(
            default=config.archive_dir,
            description="Write each month as gzipped CSV here before dropping it"
            " (FILL_ARCHIVE_DIR).",
        )
        dry_run: bool = Field(default=False, description="Only report what would be dropped.")

    @dg.op(
        description="Detach, archive and drop months past retention; refuse running competitions'."
    )
    def retire_old_months(
        context: dg.OpExecutionContext,
        config: RetentionConfig,
        owner_database: CompetitionDatabase,
    ) -> None:
        result = months.retire(
            owner_database.store(),
            config.older_than_months,
            archive_dir=Path(config.archive_dir) if config.archive_dir else None,
            dry_run=config.dry_run,
        )
        for table, competitions in result.refused.items():
            context.log.warning(
                f"{table} kept: competitions {', '.join(competitions)} still cover it"
            )
        verb = "would drop" if config.dry_run else "dropped"
        context.log.info(f"before {result.cutoff}: {verb} {', '.join(result.dropped) or 'nothing'}")

    @dg.job(executor_def=dg.in_process_executor)
    def competition_fill_retention_job() -> None:
        retire_old_months()

    monthly = dg.ScheduleDefinition(
        name="competition_fill_retention_monthly",
        job=competition_fill_retention_job,
        cron_schedule="30 4 2 * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="On the 2nd of each month: retire months past FILL_RETENTION_MONTHS.",
    )
    return competition_fill_retention_job, monthly


def owner_database(config: Settings) -> CompetitionDatabase:
    """The DDL-capable database resource for retention (see the module docstring)."""
    name = (
        "COMPETITION_OWNER_DATABASE_URL"
        if config.owner_database_url_set
        else "COMPETITION_DATABASE_URL"
    )
    return CompetitionDatabase(url=dg.EnvVar(name))
