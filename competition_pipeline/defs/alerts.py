"""Alerts that are never lost: failed windows, failing checks and a stale asset, delivered at least
once to ``ALERT_WEBHOOK_URL`` (and Slack where ``SLACK_BOT_TOKEN`` and ``SLACK_ALERT_CHANNEL`` are
set).

One sensor, ``competition_alerts``, does two things each tick:

1. **collect**: failed runs of the fill asset since its watermark (runs tagged
   ``dagster/will_retry=true`` are skipped: Dagster runs them again), failed executions of
   ``reconciles_with_journal`` and ``no_conflicting_duplicates``, and the asset's freshness turning
   to FAIL. All failed runs found in one tick make **one** alert naming their windows (an outage
   that fails ten windows is one alert), and new failures join a failure alert still undelivered.
2. **deliver** the outbox as it stood at the start of the tick: each alert is POSTed (JSON, with
   its ``id`` so a receiver can drop a repeat); one that is refused stays, and is tried again after
   an exponential backoff (``ALERT_BACKOFF_SECONDS`` doubling per attempt, at most 10 minutes);
   the sending is ``alert_delivery.py``'s, reading a run's windows and error ``runs.py``'s.

The watermarks and the outbox are the sensor's cursor, which Dagster writes to the instance's
PostgreSQL storage when the tick ends: an alert is stored before any attempt to send it, and a
tick that dies sends nothing it has not stored and loses nothing it collected (the watermarks move
with the outbox, in one write). Delivery is at least once: a POST that succeeded in a tick whose
cursor was then lost is sent again. The outbox lives in the instance, not the competition
database, so alerts about that database being down are kept too.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field

import dagster as dg

from competition_pipeline import redaction
from competition_pipeline import settings as settings_module
from competition_pipeline.defs.alert_delivery import Alert, deliver, senders
from competition_pipeline.defs.dagster_internals import (
    WILL_RETRY_TAG,
    AssetCheckExecutionRecordStatus,
    FreshnessState,
)
from competition_pipeline.defs.partitions import FILL_EVENTS_KEY
from competition_pipeline.defs.runs import records_fill_asset, run_error, windows_label
from competition_pipeline.settings import Settings

ALERTED_CHECKS = ("reconciles_with_journal", "no_conflicting_duplicates")
_CHECK_FAILED = "DagsterAssetCheckFailedError"
_FINDINGS = ("conflicts", "missing", "unexpected")
_SEEN_RUNS = 500  # run ids remembered at the watermark's edge (bounded cursor)


def failure_line(run: dg.DagsterRun, error: str | None) -> dict:
    """One structured record of a failed run: its window(s), the error class and message."""
    error_class, _, message = redaction.scrub(error or "").partition(": ")
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "windows": windows_label(run),
        "error_class": error_class or None,
        "message": message or (redaction.scrub(error) if error else error),
    }


@dataclass
class AlertCursor:
    """The sensor's cursor: what was collected up to where, and the alerts not yet delivered."""

    runs_after: float = 0.0  # update timestamp of the newest failed run seen
    seen_runs: list[str] = field(default_factory=list)
    checks_after: dict[str, int] = field(default_factory=dict)  # check name -> execution id
    # "<check> <window>" -> what it found, so a window re-recorded with the same conflict (or the
    # same reconciliation difference) is not alerted again at every run.
    check_findings: dict[str, str] = field(default_factory=dict)
    freshness_alerted: float = 0.0  # updated_at of the last FAIL state alerted
    outbox: list[Alert] = field(default_factory=list)

    @classmethod
    def from_json(cls, text: str | None) -> AlertCursor:
        if not text:
            return cls(runs_after=time.time())  # a new deployment alerts from now on
        data = json.loads(text)
        data["outbox"] = [Alert(**a) for a in data.get("outbox", [])]
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def collect_run_failures(instance: dg.DagsterInstance, cursor: AlertCursor, now: float) -> None:
    """Failed runs of the fill asset since the watermark, as one alert (or added to the failure
    alert still waiting in the outbox)."""
    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE],
            updated_after=dt.datetime.fromtimestamp(cursor.runs_after - 60, dt.UTC),
        ),
        order_by="update_timestamp",
        ascending=True,
    )
    seen = set(cursor.seen_runs)
    failed = []
    for record in records:
        run = record.dagster_run
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        cursor.seen_runs.append(run.run_id)
        cursor.runs_after = max(cursor.runs_after, record.update_timestamp.timestamp())
        if run.tags.get(WILL_RETRY_TAG) == "true" or not records_fill_asset(run):
            continue
        error = run_error(instance, run.run_id)
        if error and error.startswith(_CHECK_FAILED):
            continue  # a blocking check failed: its own alert names the window and the finding
        failed.append(failure_line(run, error))
    del cursor.seen_runs[:-_SEEN_RUNS]
    if not failed:
        return
    pending = next(
        (a for a in cursor.outbox if a.event == "competition_run_failed" and not a.sent_to), None
    )
    if pending is None:
        pending = Alert(
            id=f"runs-failed:{failed[0]['run_id']}",
            event="competition_run_failed",
            summary="",
            windows=[],
            details=[],
            created=now,
        )
        cursor.outbox.append(pending)
    pending.details.extend(failed)
    pending.windows.extend(f["windows"] for f in failed if f["windows"])
    first = pending.details[0]
    pending.summary = (
        f"{len(pending.details)} recording run(s) failed, windows {', '.join(pending.windows)}:"
        f" {first['error_class']}: {first['message']}"
    )


def collect_check_failures(instance: dg.DagsterInstance, cursor: AlertCursor, now: float) -> None:
    """Each failed execution of the reconciliation or the conflicts check is one alert."""
    for name in ALERTED_CHECKS:
        key = dg.AssetCheckKey(FILL_EVENTS_KEY, name)
        after = cursor.checks_after.get(name, -1)
        records = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=100, status={AssetCheckExecutionRecordStatus.FAILED}
        )
        if after < 0:  # first tick: start from the newest execution, alert from now on
            cursor.checks_after[name] = max((r.id for r in records), default=0)
            continue
        for record in sorted((r for r in records if r.id > after), key=lambda r: r.id):
            evaluation = record.event.asset_check_evaluation if record.event else None
            metadata = {k: v.value for k, v in (evaluation.metadata if evaluation else {}).items()}
            cursor.checks_after[name] = record.id
            finding = json.dumps({k: metadata.get(k) for k in _FINDINGS}, sort_keys=True)
            seen_key = f"{name} {record.partition}"
            if cursor.check_findings.get(seen_key) == finding:
                continue
            cursor.check_findings[seen_key] = finding
            cursor.outbox.append(
                Alert(
                    id=f"check:{name}:{record.id}",
                    event="competition_check_failed",
                    summary=f"{name} failed for window {record.partition} (run {record.run_id})",
                    windows=[record.partition] if record.partition else [],
                    details=[{"check": name, "run_id": record.run_id, **_plain(metadata)}],
                    created=now,
                )
            )


def collect_freshness(instance: dg.DagsterInstance, cursor: AlertCursor, now: float) -> None:
    """The asset's freshness turning to FAIL (the FreshnessPolicy, evaluated by the daemon)."""
    record = instance.get_freshness_state_records([FILL_EVENTS_KEY]).get(FILL_EVENTS_KEY)
    if record is None or record.freshness_state != FreshnessState.FAIL:
        return
    changed = record.updated_at.timestamp()
    if changed <= cursor.freshness_alerted:
        return
    cursor.freshness_alerted = changed
    cursor.outbox.append(
        Alert(
            id=f"freshness:{changed}",
            event="competition_fill_events_stale",
            summary="competition_fill_events is stale: no window recorded within its freshness"
            " policy's window (is the sensor or the daemon stopped?)",
            windows=[],
            details=[{"stale_since": changed}],
            created=now,
        )
    )


def _plain(metadata: dict) -> dict:
    return {
        k: v if isinstance(v, int | float | bool) else redaction.scrub(str(v))
        for k, v in metadata.items()
    }


def build_alerts_sensor(settings: Settings) -> dg.SensorDefinition:
    """The ``competition_alerts`` sensor, its interval and delivery backoff from ``settings``."""

    @dg.sensor(
        name="competition_alerts",
        minimum_interval_seconds=settings.alert_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Collects failed recording runs, failed reconciliation/conflict checks and a stale"
            " competition_fill_events into an outbox in its cursor, and delivers the outbox to"
            " ALERT_WEBHOOK_URL (and Slack) at least once, with backoff."
        ),
    )
    def competition_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = time.time()
        cursor = AlertCursor.from_json(context.cursor)
        stored = cursor.outbox  # written durably by an earlier tick: only these may be sent now
        targets = senders(settings_module.alert_targets())  # read each tick: no restart needed
        cursor.outbox = deliver(stored, targets, now, settings.alert_backoff_seconds)
        for alert in stored:
            if alert not in cursor.outbox:
                context.log.info(f"alert {alert.id} delivered to {', '.join(alert.sent_to)}")
        owed = len(cursor.outbox)
        collect_run_failures(context.instance, cursor, now)
        collect_check_failures(context.instance, cursor, now)
        collect_freshness(context.instance, cursor, now)
        for alert in cursor.outbox[owed:]:
            context.log.error(json.dumps(alert.payload(), sort_keys=True))
        if not targets:  # nowhere to send them: the log line above is the alert
            cursor.outbox = []
        return dg.SensorResult(cursor=cursor.to_json())

    return competition_alerts
