"""``competition_standings``: the leaderboard, downstream of the recorded fills.

Refreshed by ``standings_refresh_sensor`` (not a declarative automation condition): whether new
fills matter depends on data in PostgreSQL, the competitions' periods, which a condition over
asset events cannot see. The sensor reads the new materializations of ``competition_fill_events``
after its cursor (a storage id) and requests one standings run when any of their windows overlaps
a competition. Users can also materialize it from the UI at any time.
"""

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


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+!|~-])")


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown: its markup escaped, its control characters and line breaks
    shown as escapes (a username is anyone's: it must not become a link or break the table)."""
    printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return _MARKDOWN.sub(r"\\\1", printable)


def _top_ten(rows: list[Standing]) -> str:
    lines = [
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
    ),
)
def competition_standings(
    context: dg.AssetExecutionContext, database: CompetitionDatabase
) -> dg.MaterializeResult:
    metadata: dict = {}
    with failing_step("standings not refreshed (each competition's are replaced atomically)"):
        store = database.store()
        competitions = Competitions(store)
        with store.wrap_errors("cannot refresh the standings on"):
            ids = competitions.all_ids()
            for competition_id in ids:
                rows = competitions.refresh(competition_id)
                leader = rows[0] if rows else None
                context.log.info(f"{competition_id}: {len(rows)} participants ranked")
                prefix = f"{competition_id}/" if len(ids) > 1 else ""
                metadata[f"{prefix}top_ten"] = dg.MetadataValue.md(_top_ten(rows))
                metadata[f"{prefix}leader_pnl"] = float(leader.pnl) if leader else 0.0
                metadata[f"{prefix}participants"] = len(rows)
    metadata["competitions"] = len(ids)
    return dg.MaterializeResult(metadata=metadata)


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
