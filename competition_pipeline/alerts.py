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
   an exponential backoff (``ALERT_BACKOFF_SECONDS`` doubling per attempt, at most 10 minutes).

The watermarks and the outbox are the sensor's cursor, which Dagster writes to the instance's
PostgreSQL storage when the tick ends: an alert is stored before any attempt to send it, and a
tick that dies sends nothing it has not stored and loses nothing it collected (the watermarks move
with the outbox, in one write). Delivery is at least once: a POST that succeeded in a tick whose
cursor was then lost is sent again. The outbox lives in the instance, not the competition
database, so alerts about that database being down are kept too.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import dagster as dg
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    WILL_RETRY_TAG,
)

from competition_pipeline.assets import competition_fill_events

ALERT_INTERVAL_SECONDS = int(os.environ.get("ALERT_INTERVAL_SECONDS", "15"))
BACKOFF_SECONDS = float(os.environ.get("ALERT_BACKOFF_SECONDS", "15"))
MAX_BACKOFF_SECONDS = 600.0
ALERTED_CHECKS = ("reconciles_with_journal", "no_conflicting_duplicates")
_CHECK_FAILED = "DagsterAssetCheckFailedError"
_FINDINGS = ("conflicts", "missing", "unexpected")
_SEEN_RUNS = 500  # run ids remembered at the watermark's edge (bounded cursor)
_WRAPPERS = {
    "DagsterMaxRetriesExceededError",
    "RetryRequestedFromPolicy",
    "DagsterExecutionStepExecutionError",
}


def run_windows(run: dg.DagsterRun) -> str | None:
    """The window, or the ``first..last`` range, a run recorded."""
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        return tags[PARTITION_NAME_TAG]
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return f"{tags[ASSET_PARTITION_RANGE_START_TAG]}..{tags.get(ASSET_PARTITION_RANGE_END_TAG)}"
    return None


def failure_line(run: dg.DagsterRun, error: str | None) -> dict:
    """One structured record of a failed run: its window(s), the error class and message."""
    error_class, _, message = (error or "").partition(": ")
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "windows": run_windows(run),
        "error_class": error_class or None,
        "message": message or error,
    }


def _cause(error):
    """The error that says why: past Dagster's retry and step-execution wrappers."""
    while error.cls_name in _WRAPPERS and (error.cause or error.context):
        error = error.cause or error.context
    return error


def run_error(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """``Class: message`` of the first step failure's cause, else the run failure's message."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data if entry.dagster_event else None
        if data is not None and data.error is not None:
            cause = _cause(data.error)
            return f"{cause.cls_name}: {cause.message.strip()}"
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE):
        if entry.dagster_event and entry.dagster_event.message:
            return f"RunFailure: {entry.dagster_event.message}"
    return None


@dataclass
class Alert:
    id: str
    event: str
    summary: str
    windows: list[str]
    details: list[dict]
    created: float
    attempts: int = 0
    next_attempt: float = 0.0
    sent_to: list[str] = field(default_factory=list)
    last_error: str | None = None

    def payload(self) -> dict:
        return {
            k: getattr(self, k) for k in ("id", "event", "summary", "windows", "details", "created")
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


def records_fill_asset(run: dg.DagsterRun) -> bool:
    """A partitioned run (only the fill asset is partitioned) that selected the asset or all."""
    partitioned = PARTITION_NAME_TAG in run.tags or ASSET_PARTITION_RANGE_START_TAG in run.tags
    selection = run.asset_selection
    return partitioned and (not selection or competition_fill_events.key in selection)


def collect_run_failures(instance: dg.DagsterInstance, cursor: AlertCursor, now: float) -> None:
    """Failed runs of the fill asset since the watermark, as one alert (or added to the failure
    alert still waiting in the outbox)."""
    import datetime as dt

    records = instance.get_run_records(
        RunsFilter(
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
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    for name in ALERTED_CHECKS:
        key = dg.AssetCheckKey(competition_fill_events.key, name)
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
    from dagster._core.definitions.freshness import FreshnessState

    record = instance.get_freshness_state_records([competition_fill_events.key]).get(
        competition_fill_events.key
    )
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
        k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in metadata.items()
    }


def post_json(url: str, body: dict, timeout: float = 10.0) -> None:
    """POST to the webhook; any non-2xx or connection error raises."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (operator-configured URL)
        pass


def slack_sender(token: str, channel: str) -> Callable[[dict], None]:
    """Post an alert's summary to Slack through dagster-slack's client."""
    from dagster_slack import SlackResource

    client = SlackResource(token=token).get_client()
    if api_url := os.environ.get("SLACK_API_URL"):  # a Slack-compatible endpoint (and tests)
        client.base_url = api_url

    def send(body: dict) -> None:
        client.chat_postMessage(channel=channel, text=f":rotating_light: {body['summary']}")

    return send


def targets_from_environment() -> dict[str, Callable[[dict], None]]:
    targets: dict[str, Callable[[dict], None]] = {}
    if url := os.environ.get("ALERT_WEBHOOK_URL"):
        targets["webhook"] = lambda body: post_json(url, body)
    token, channel = os.environ.get("SLACK_BOT_TOKEN"), os.environ.get("SLACK_ALERT_CHANNEL")
    if token and channel:
        targets["slack"] = slack_sender(token, channel)
    return targets


def deliver(
    outbox: list[Alert], targets: dict[str, Callable[[dict], None]], now: float
) -> list[Alert]:
    """Send the due alerts to every target that has not accepted them yet and return the ones
    still owed, each with its backoff. A target that refuses is not tried again this tick."""
    down: set[str] = set()
    owed = []
    for alert in outbox:
        due = [t for t in targets if t not in alert.sent_to and t not in down]
        if alert.next_attempt <= now and due:
            for name in due:
                try:
                    targets[name](alert.payload())
                    alert.sent_to.append(name)
                except Exception as exc:  # noqa: BLE001 (any refusal: keep it, try again later)
                    down.add(name)
                    alert.last_error = f"{name}: {type(exc).__name__}: {exc}"[:500]
            if any(t not in alert.sent_to for t in targets):
                alert.attempts += 1
                alert.next_attempt = now + min(
                    BACKOFF_SECONDS * 2 ** (alert.attempts - 1), MAX_BACKOFF_SECONDS
                )
        if any(t not in alert.sent_to for t in targets):
            owed.append(alert)
    return owed


@dg.sensor(
    name="competition_alerts",
    minimum_interval_seconds=ALERT_INTERVAL_SECONDS,
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
    targets = targets_from_environment()
    cursor.outbox = deliver(stored, targets, now)
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
