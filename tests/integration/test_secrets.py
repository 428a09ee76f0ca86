"""Issue 33: each secret the product takes, through each exit it reached on main: the CLI's
output and errors, psql's command line, a failed run's events, the alerts and the alert sensor's
cursor, the local state file, and the webserver's GraphQL (``allTopLevelResourceDetails``).

The secrets are given in every form a URL carries one: the userinfo, a ``password=`` query
parameter (libpq and SQLAlchemy accept it), an unencoded ``@``; and as the NATS, Slack and
webhook variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.defs import alerts
from competition_pipeline.defs.alerts import build_alerts_sensor
from competition_pipeline.store import dburl
from competition_pipeline.tools import local_state
from tests.helpers.environment import REPO
from tests.helpers.journal import KEY, T0, W1, WINDOW, fill, write_segment
from tests.helpers.location import SETTINGS
from tests.helpers.runs import materialize
from tests.helpers.webhook import Webhook

QUERY_SECRET = "hunter2-Query-33"
DOWN_QUERY = f"postgresql://recorder@127.0.0.1:1/competition?password={QUERY_SECRET}"
CLI = str(Path(sys.executable).with_name("competition-pipeline"))


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("COMPETITION_", "NATS"))}
    environ.update(env)
    return subprocess.run(
        [CLI, *args], env=environ, capture_output=True, text=True, timeout=120, cwd=REPO
    )


@pytest.mark.parametrize(
    "args",
    [
        ("schema",),
        ("competition", "list"),
        ("status",),
        ("rebuild", "--from", KEY, "--to", KEY),
        ("standings", "x"),
    ],
)
def test_a_database_error_is_one_line_without_the_query_password(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """On main: the password of ``?password=`` in the error of schema, competition list and
    rebuild, and a traceback from schema, competition and status."""
    done = cli(
        *args, env={"COMPETITION_DATABASE_URL": DOWN_QUERY, "FILL_JOURNAL_DIR": str(tmp_path)}
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert QUERY_SECRET not in output and "Traceback" not in output
    (error,) = done.stderr.strip().splitlines()
    assert error.startswith("error: ") and "password=***" in error


def test_a_password_with_an_unencoded_at_is_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql://alice:p@ss-Word-34@127.0.0.1:1/competition"
    done = cli("competition", "list", env={"COMPETITION_DATABASE_URL": url})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "ss-Word-34" not in done.stdout + done.stderr
    assert "percent-encode it as %40" in done.stderr


def test_psql_never_puts_the_password_on_its_command_line(database_url: str) -> None:
    """On main ``psql`` got the ``?password=`` URL on its argv (visible to every user in ps)."""
    url = dburl.parse(database_url).update_query_dict({"password": QUERY_SECRET})
    env = {"COMPETITION_DATABASE_URL": url.render_as_string(hide_password=False)}
    printed = cli("psql", "--print", env=env)
    assert printed.returncode == 0 and QUERY_SECRET not in printed.stdout
    assert printed.stdout.startswith("PGPASSWORD=... psql ")
    # psql reads its own command line (/proc/<psql>/cmdline) through its shell escape.
    done = cli("psql", "--", "-Atc", r"\! tr '\0' ' ' < /proc/$PPID/cmdline", env=env)
    assert done.returncode == 0, done.stderr
    assert "psql" in done.stdout and QUERY_SECRET not in done.stdout


def test_a_failed_run_and_its_alerts_never_show_a_query_password(
    journal: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On main a failed run stored the ``?password=`` in the event log and the failure alert
    copied it to the webhook and to Slack."""
    hook = Webhook(refuse=0)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.url)
    try:
        instance = dg.DagsterInstance.get()
        sensor = build_alerts_sensor(replace(SETTINGS, alert_backoff_seconds=0.0))
        cursor = sensor(dg.build_sensor_context(instance=instance)).cursor
        write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0)])
        result = materialize(DOWN_QUERY, journal, instance=instance, raise_on_error=False)
        assert not result.success
        for _ in range(2):
            cursor = sensor(dg.build_sensor_context(instance=instance, cursor=cursor)).cursor
    finally:
        hook.server.shutdown()
    events = instance.all_logs(result.run_id)
    stored = "".join(dg.serialize_value(e) for e in events)
    assert "cannot connect to" in stored and "password=***" in stored
    assert QUERY_SECRET not in stored
    (body,) = hook.received
    assert "cannot connect to" in json.dumps(body) and QUERY_SECRET not in json.dumps(body)
    assert QUERY_SECRET not in cursor


def test_a_malformed_webhook_url_is_kept_nowhere_in_the_alert_cursor(
    journal: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On main a webhook URL without its scheme (a Slack hook's path, its token in it) was kept
    in the alert sensor's cursor (urllib's error names it), readable in the UI."""
    token = "XXsecretTokenXX35"
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"hooks.slack.com/services/T0/B0/{token}")
    instance = dg.DagsterInstance.get()
    sensor = build_alerts_sensor(replace(SETTINGS, alert_backoff_seconds=0.0))
    cursor = sensor(dg.build_sensor_context(instance=instance)).cursor
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0)])
    assert not materialize(DOWN_QUERY, journal, instance=instance, raise_on_error=False).success
    for _ in range(2):
        cursor = sensor(dg.build_sensor_context(instance=instance, cursor=cursor)).cursor
    (alert,) = alerts.AlertCursor.from_json(cursor).outbox
    assert alert.attempts >= 1 and "not an http(s) URL" in (alert.last_error or "")
    assert token not in cursor and "services/T0" not in cursor


def test_the_local_state_file_is_private_and_holds_no_password_in_any_form(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On main ``.var/local.json`` held a ``?password=`` in the URL and in the "redacted" field,
    world-readable (0644)."""
    monkeypatch.setenv("COMPETITION_DATABASE_URL", DOWN_QUERY)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql://d:dagster-Secret-36@h/dagster")
    path = state / local_state.STATE_FILE
    path.write_text("{}")
    path.chmod(0o644)  # an older file: its mode is corrected too
    local_state.write_local_state(state)
    text = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert QUERY_SECRET not in text and "dagster-Secret-36" not in text
    data = json.loads(text)
    assert data["competition_database_url"] is None and data["dagster_postgres_url"] is None
    assert data["competition_database_url_redacted"].endswith("?password=***")


def test_the_webserver_shows_nats_secrets_by_variable_name(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On main ``allTopLevelResourceDetails`` returned ``nats://user:password@host:4222``, in
    the read-only webserver too. Through the webserver's GraphQL over a code server that loaded
    the definitions from this environment."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    secrets = {
        "NATS_URL": "nats://fills:natsurl-Secret-37@127.0.0.1:4222",
        "NATS_PASSWORD": "natspw-Secret-38",
        "NATS_TOKEN": "natstoken-Secret-39",
    }
    monkeypatch.setenv("FILL_SOURCE", "nats")
    monkeypatch.setenv("NATS_USER", "fills")
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    query = """
    query { repositoriesOrError { ... on RepositoryConnection { nodes {
        allTopLevelResourceDetails { name configuredValues { key value type } } } } } }
    """
    instance = dg.DagsterInstance.get()
    definitions = str(REPO / "competition_pipeline" / "definitions.py")
    for read_only in (False, True):
        with define_out_of_process_context(
            definitions, "defs", instance, read_only=read_only
        ) as context:
            result = execute_dagster_graphql(context, query)
        text = json.dumps(result.data)
        for value in secrets.values():
            assert value not in text and "Secret-3" not in text
        (node,) = result.data["repositoriesOrError"]["nodes"]
        (source,) = [r for r in node["allTopLevelResourceDetails"] if r["name"] == "fill_source"]
        shown = {v["key"]: (v["type"], v["value"]) for v in source["configuredValues"]}
        for name in secrets:
            assert shown[name.lower()] == ("ENV_VAR", name)


def test_standings_print_no_terminal_escape_from_a_username(
    database_url: str, journal: Path
) -> None:
    """On main a username's escape sequences were printed raw by ``standings``."""
    env = {"COMPETITION_DATABASE_URL": database_url}
    assert materialize(database_url, journal).success or True
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0)])
    assert materialize(database_url, journal).success
    create = ("competition", "create", "cup", "--start", "2026-11-20T00:00Z")
    assert cli(*create, "--end", "2026-11-21T00:00Z", env=env).returncode == 0
    evil = "\x1b]0;owned\x07\x1b[2J"
    assert cli("competition", "register", "cup", W1, "--username", evil, env=env).returncode == 0
    done = cli("standings", "cup", "--refresh", env=env)
    assert done.returncode == 0, done.stderr
    assert W1.lower() in done.stdout and "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "\\x1b]0;owned" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "9999-12-31-23:00", "--to", "9999-12-31-23:00"), "partition keys are"),
        (("--from", "2006-01-01-00:00", "--to", "2025-12-31-23:00"), "split the range"),
    ],
)
def test_rebuild_ranges_are_bounded(
    args: tuple[str, ...], message: str, database_url: str, tmp_path: Path
) -> None:
    """On main: ``OverflowError`` for the last hour of 9999, and 175,320 windows walked for 20
    years."""
    env = {"COMPETITION_DATABASE_URL": database_url, "FILL_JOURNAL_DIR": str(tmp_path)}
    done = cli("rebuild", *args, env=env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


def test_a_date_with_a_quote_is_a_one_line_error(database_url: str) -> None:
    env = {"COMPETITION_DATABASE_URL": database_url}
    done = cli(
        "competition",
        "create",
        "c",
        "--start",
        "2026-01-01'",
        "--end",
        "2026-02-01T00:00Z",
        env=env,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "is not a time" in line
