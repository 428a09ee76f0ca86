"""``competition_standings``: the leaderboard, downstream of the recorded fills.

Refreshed by ``standings_refresh_sensor`` (not a declarative automation condition): whether new
fills matter depends on data in PostgreSQL, the competitions' periods, which a condition over
asset events cannot see. The sensor reads the new materializations of ``competition_fill_events``
after its cursor (a storage id) and requests one standings run when any of their windows overlaps
a competition. Users can also materialize it from the UI at any time.
"""

import datetime as dt
import re

import dagster as dg

from competition_pipeline.defs.failures import failing_step
from competition_pipeline.defs.partitions import FILL_EVENTS_KEY
from competition_pipeline.defs.resources import CompetitionDatabase
from competition_pipeline.defs.tables import column_schema
from competition_pipeline.fills.windows import Window
from competition_pipeline.store import tables
from competition_pipeline.store.standings import Competitions, Standing

STANDINGS_SENSOR_INTERVAL_SECONDS = 30
STANDINGS_KEY = dg.AssetKey("competition_standings")


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+!|~-])")


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown: its markup escaped, its control characters and line breaks
    shown as escapes (a username is anyone's: it must not become a link or break the table)."""
    printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return _MARKDOWN.sub(r"\\\1", printable)


def _top_ten(rows: list[Standing]) -> str:
    lines = []
    if rows and rows[0].computed_at is not None:
        first = rows[0]
        through = (
            f"up to the fill at {first.through_fill_ts.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
            f" (trade {first.through_trade_id})"
            if first.through_fill_ts is not None
            else "no fill recorded in the period yet"
        )
        computed = f"{first.computed_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"
        lines += [f"Computed {computed} UTC, {through}.", ""]
    lines += [
        "| rank | wallet | user | pnl | volume | trades | medal |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in rows[:10]:
        lines.append(
            f"| {s.rank} | `{s.wallet}` | {markdown_text(s.username or '')} | {s.pnl} | {s.volume}"
            f" | {s.trades} "
            f"| {s.medal or ''} |"
        )
    return "\n".join(lines)


#: Where the standings are current, said beside every leaderboard the UI shows.
CURRENT = (
    "The table competition_standings is current (`competition-pipeline standings ID` prints it,"
    " with when it was computed): while an hour is followed, its follower refreshes the running"
    " competitions' standings every few seconds and reports this leaderboard once a minute;"
    " otherwise standings_refresh_sensor materializes it after each recorded window."
)


def leaderboard_metadata(rows_by_id: dict[str, list[Standing]]) -> dict:
    """Each competition's top ten, when it was computed and up to which fill, its leader's pnl
    and its participants; and where current standings are."""
    metadata: dict = {}
    for competition_id, rows in rows_by_id.items():
        leader = rows[0] if rows else None
        prefix = f"{competition_id}/" if len(rows_by_id) > 1 else ""
        metadata[f"{prefix}top_ten"] = dg.MetadataValue.md(_top_ten(rows))
        if leader is not None and leader.computed_at is not None:
            computed_at = leader.computed_at.timestamp()
            metadata[f"{prefix}computed_at"] = dg.MetadataValue.timestamp(computed_at)
        metadata[f"{prefix}leader_pnl"] = float(leader.pnl) if leader else 0.0
        metadata[f"{prefix}participants"] = len(rows)
    metadata["competitions"] = len(rows_by_id)
    metadata["current_standings"] = dg.MetadataValue.text(CURRENT)
    return metadata


def report_follower_leaderboard(
    instance: dg.DagsterInstance, competitions: Competitions, window: Window, run_id: str
) -> None:
    """The standings as the follower of ``window`` keeps them, reported as a materialization of
    ``competition_standings`` (the table was rewritten: its leaderboard in the UI is the current
    one, not the one of the asset's last run)."""
    rows_by_id = {c: competitions.standings(c) for c in competitions.all_ids()}
    metadata = leaderboard_metadata(rows_by_id)
    metadata["refreshed_by"] = f"the follower of {window.key} (run {run_id})"
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=STANDINGS_KEY, metadata=metadata)
    )


@dg.asset(
    name="competition_standings",
    deps=[FILL_EVENTS_KEY],
    group_name="competition",
    kinds={"postgres"},
    metadata={
        "dagster/table_name": "competition_standings",
        "dagster/column_schema": column_schema(tables.competition_standings),
    },
    description=(
        "Every competition's leaderboard in table competition_standings, from the recorded fills"
        " in [start_ts, end_ts), self-trades excluded; replaced per competition in one transaction."
        " The follower of the open hour keeps the running competitions' standings current and"
        " reports them here once a minute (metadata refreshed_by); computed_at says when."
    ),
)
def competition_standings(
    context: dg.AssetExecutionContext, database: CompetitionDatabase
) -> dg.MaterializeResult:
    rows_by_id = {}
    with failing_step("standings not refreshed (each competition's are replaced atomically)"):
        store = database.store()
        competitions = Competitions(store)
        with store.wrap_errors("cannot refresh the standings on"):
            for competition_id in competitions.all_ids():
                rows_by_id[competition_id] = rows = competitions.refresh(competition_id)
                context.log.info(f"{competition_id}: {len(rows)} participants ranked")
    return dg.MaterializeResult(metadata=leaderboard_metadata(rows_by_id))


def _follower_progress(materialization: dg.AssetMaterialization) -> bool:
    value = materialization.metadata.get("follower")
    return value is not None and getattr(value, "value", value) == "progress"


standings_job = dg.define_asset_job("competition_standings_job", selection=[competition_standings])


@dg.sensor(
    name="standings_refresh_sensor",
    target=standings_job,
    minimum_interval_seconds=STANDINGS_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refresh standings when a recorded window overlaps a competition.",
)
def standings_refresh_sensor(
    context: dg.SensorEvaluationContext, database: CompetitionDatabase
) -> dg.SensorResult | dg.SkipReason:
    records = context.instance.fetch_materializations(
        FILL_EVENTS_KEY, limit=1000, cursor=context.cursor, ascending=True
    )
    if not records.records:
        return dg.SkipReason("no new recorded windows")
    competitions = Competitions(database.store())
    affected: set[str] = set()
    for record in records.records:
        materialization = record.asset_materialization
        if materialization is None or _follower_progress(materialization):
            continue  # the follower of the open hour refreshes the standings itself
        partition = materialization.partition
        if partition:
            window = Window.from_key(partition)
            affected.update(competitions.active_overlapping(window.start, window.end))
    last = records.records[-1].storage_id
    requests = (
        [
            dg.RunRequest(
                run_key=f"standings@{last}", tags={"competitions": ",".join(sorted(affected))}
            )
        ]
        if affected
        else []
    )
    return dg.SensorResult(run_requests=requests, cursor=records.cursor)
