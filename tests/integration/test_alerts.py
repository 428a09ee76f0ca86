"""``competition_alerts``: evaluated on a real instance (PostgreSQL storage) against a local webhook
that refuses its first requests; every alert arrives once it accepts, none is sent twice."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.defs import alerts
from competition_pipeline.defs.alerts import build_alerts_sensor
from competition_pipeline.fills.windows import HOUR, Window
from tests.helpers.journal import KEY, T0, WINDOW, fill, write_segment
from tests.helpers.location import SETTINGS
from tests.helpers.runs import materialize
from tests.helpers.sql import query
from tests.helpers.webhook import Webhook

DOWN = "postgresql://recorder:hunter2-secret@127.0.0.1:1/competition"


@pytest.fixture
def webhook(monkeypatch) -> Iterator[Webhook]:
    hook = Webhook(refuse=3)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.url)
    yield hook
    hook.server.shutdown()


class Ticks:
    """Evaluate the alerts sensor tick after tick on the instance, carrying its cursor."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance, self.cursor = instance, None
        # No delivery backoff: a refused alert is tried again at the next tick.
        self.sensor = build_alerts_sensor(replace(SETTINGS, alert_backoff_seconds=0.0))

    def __call__(self) -> alerts.AlertCursor:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor)
        result = self.sensor(context)
        self.cursor = result.cursor
        return alerts.AlertCursor.from_json(self.cursor)


def test_an_outage_of_ten_windows_is_one_alert_delivered_after_refusals(
    journal: Path, dagster_home: Path, webhook: Webhook
) -> None:
    instance = dg.DagsterInstance.get()
    tick = Ticks(instance)
    tick()  # the first tick sets the watermarks
    windows = [Window(WINDOW.start + i * HOUR) for i in range(10)]
    for window in windows:
        write_segment(journal, window, "s.jsonl", [fill(1000 + window.start.hour, window.start_ms)])
        result = materialize(DOWN, journal, window.key, instance=instance, raise_on_error=False)
        assert not result.success
    # A run Dagster will retry (the run-retry daemon tags it) does not alert.
    retried = Window(WINDOW.start + 20 * HOUR)
    assert not materialize(
        DOWN,
        journal,
        retried.key,
        instance=instance,
        raise_on_error=False,
        tags={"dagster/will_retry": "true"},
    ).success

    cursor = tick()  # collected and stored, not yet sent
    (alert,) = cursor.outbox
    assert webhook.requests == 0
    assert (
        sorted(alert.windows) == sorted(w.key for w in windows) and retried.key not in alert.windows
    )
    for refused in range(1, 4):
        cursor = tick()
        assert webhook.requests == refused and cursor.outbox[0].attempts == refused
    cursor = tick()
    assert cursor.outbox == [] and webhook.requests == 4
    for _ in range(3):
        tick()
    (body,) = webhook.received
    assert body["event"] == "competition_run_failed" and body["id"] == alert.id
    assert sorted(body["windows"]) == sorted(w.key for w in windows)
    first = body["details"][0]
    assert first["error_class"] and "cannot connect to" in first["message"]
    assert "hunter2-secret" not in json.dumps(body)


def test_a_conflict_and_a_failing_reconciliation_each_alert_once(
    database_url: str, journal: Path, dagster_home: Path, webhook: Webhook
) -> None:
    instance = dg.DagsterInstance.get()
    tick = Ticks(instance)
    tick()
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0 + 1), fill(1, T0 + 1, price="9")])
    assert materialize(database_url, journal, checks=True, instance=instance).success
    # A row no journal line gives, stored behind the recorder's back: the blocking
    # reconciliation of the next recording names it as unexpected and fails.
    query(
        database_url,
        "INSERT INTO competition_fill_events SELECT (jsonb_populate_record("
        "NULL::competition_fill_events, to_jsonb(e) || '{\"trade_id\": 999}')).*"
        " FROM competition_fill_events e LIMIT 1 RETURNING 1",
    )
    rerun = materialize(database_url, journal, checks=True, instance=instance, raise_on_error=False)
    failed = [e for e in rerun.get_asset_check_evaluations() if not e.passed]
    assert {e.check_name for e in failed} >= {"reconciles_with_journal"}
    webhook.refuse = 0
    for _ in range(3):
        tick()
    # The same conflict found again by a later recording is not a new alert.
    materialize(database_url, journal, checks=True, instance=instance, raise_on_error=False)
    for _ in range(3):
        tick()
    events = sorted((b["event"], b["details"][0]["check"]) for b in webhook.received)
    assert events == [
        ("competition_check_failed", "no_conflicting_duplicates"),
        ("competition_check_failed", "reconciles_with_journal"),
    ]
    assert all(b["windows"] == [KEY] for b in webhook.received)


def test_slack_gets_the_alert_through_dagster_slack(
    journal: Path, dagster_home: Path, webhook: Webhook, monkeypatch
) -> None:
    """Slack's Web API played by a local server (SLACK_API_URL): chat.postMessage with the
    channel and the alert's summary; the webhook gets the same alert."""
    posts: list[dict] = []

    class SlackApi(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append({"path": self.path, **json.loads(body)})
            answer = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    slack = HTTPServer(("127.0.0.1", 0), SlackApi)
    threading.Thread(target=slack.serve_forever, daemon=True).start()
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("SLACK_ALERT_CHANNEL", "#competition-alerts")
    monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{slack.server_port}/api/")
    webhook.refuse = 0
    try:
        instance = dg.DagsterInstance.get()
        tick = Ticks(instance)
        tick()
        write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0)])
        assert not materialize(DOWN, journal, instance=instance, raise_on_error=False).success
        for _ in range(3):
            tick()
    finally:
        slack.shutdown()
    (post,) = posts
    assert post["path"] == "/api/chat.postMessage" and post["channel"] == "#competition-alerts"
    assert KEY in post["text"] and "hunter2-secret" not in post["text"]
    (body,) = webhook.received
    assert body["windows"] == [KEY]
