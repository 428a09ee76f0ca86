"""competition_run_failure_alert: one structured line per failed run, POSTed to the webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg

from competition_pipeline.sensors import competition_run_failure_alert
from tests.journal_helpers import fill, write_segment
from tests.test_asset import KEY, T0, WINDOW, materialize


def test_a_failed_run_is_alerted_once_with_its_window(journal: Path, monkeypatch) -> None:
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/alerts")
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0)])
    try:
        with dg.instance_for_test() as instance:
            url = "postgresql://recorder:hunter2-secret@127.0.0.1:1/competition"
            result = materialize(url, journal, instance=instance, raise_on_error=False)
            assert not result.success
            run = instance.get_run_by_id(result.run_id)
            (entry,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            failure = entry.dagster_event
            context = dg.build_run_status_sensor_context(
                sensor_name="competition_run_failure_alert",
                dagster_event=failure,
                dagster_instance=instance,
                dagster_run=run,
            ).for_run_failure()
            competition_run_failure_alert(context)
    finally:
        server.shutdown()
    (alert,) = received
    assert alert["event"] == "competition_run_failed" and alert["windows"] == KEY
    assert alert["run_id"] == result.run_id and alert["error_class"]
    assert "cannot connect to" in alert["message"] and "hunter2-secret" not in json.dumps(alert)
