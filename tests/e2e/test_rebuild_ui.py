"""The rebuild job (``competition_fill_rebuild_job``) through ``dagster dev`` on PostgreSQL
instance storage: launched over a range as a backfill through the webserver's GraphQL, as the UI's
partitions Backfill does, first as a dry run (the diff in the step's output metadata, nothing
written), then applied (the table equals a fresh recording, the old rows kept under each run's id);
the dry run's diff on its run page in a real browser; and what Dagster 1.13 shows when the asset's
code version (``str(RECORDING_VERSION)``) changes: a partitioned asset has no staleness of its own
(``staleStatus`` FRESH, no causes, for the asset), each materialized partition is STALE with one
CODE cause ("has a new code version"), and its partition page shows "Unsynced (1)"; a window the
rebuild replaced counts as materialized by the rebuild's code version (its materialization's
``dagster/code_version`` tag), so it goes unsynced too.

Three windows are recorded in the test process under an earlier release's rules (the maker's fee
taken from the taker's, RECORDING_VERSION 2) before ``dagster dev`` starts, so the stored rows
differ from what the current rules derive. One ``dagster dev`` serves the module; the journal
sensor is off, so only the tests' runs touch the windows.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording import fill_events as recording
from competition_pipeline.recording.fill_events import record_window
from competition_pipeline.store.database import CompetitionStore
from tests.helpers.browser import CHROMIUM_ARGS, chromium_executable
from tests.helpers.dagster_dev import (
    LAUNCH,
    LAUNCH_RUN,
    STATUS,
    DagsterDev,
    dagster_dev_env,
    free_port,
    post_graphql,
    run_dagster_dev,
    wait_for,
)
from tests.helpers.environment import REPO
from tests.helpers.journal import W1, W2, fill, write_segment
from tests.helpers.rebuild import fills_table, old_release, snapshot
from tests.helpers.sql import fresh_database, query

#: With workers (bin/test's ``-n``) one of them runs the module in order: its tests share one
#: ``dagster dev`` and the backfills the first test launched (``SAME_WORKER``, tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.sensor_off]

JOB = "competition_fill_rebuild_job"
ASSET = "competition_fill_events"
REPOSITORY = {"repositoryLocationName": "competition_pipeline", "repositoryName": "__repository__"}
WINDOWS = [Window(Window.from_key("2026-11-10-00:00").start + i * HOUR) for i in range(3)]
#: Per window: two fills (taker W1, maker W2), whose maker rows the old rule gave the taker's fee.
FILLS = 2
#: A window only ever recorded by the asset with this code (the code version test's).
CURRENT = Window(WINDOWS[-1].start + HOUR)
OLD_FEE, NEW_FEE = "0.38", "-0.05"
REASON = "maker fee taken from accounting.maker_fee since release 3"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

PARTITION_SETS = """
query PartitionSets($repositorySelector: RepositorySelector!, $job: String!) {
  partitionSetsOrError(repositorySelector: $repositorySelector, pipelineName: $job) {
    __typename
    ... on PartitionSets { results { name pipelineName } }
    ... on PythonError { message }
  }
}"""
#: A run's status, partition, the diff in its step output and its materializations.
RUN_EVENTS = """
query RunEvents($id: ID!) {
  runOrError(runId: $id) {
    ... on Run {
      runId
      status
      tags { key value }
      eventConnection(afterCursor: null) {
        events {
          __typename
          ... on ExecutionStepOutputEvent {
            stepKey
            metadataEntries {
              label
              ... on MarkdownMetadataEntry { mdStr }
              ... on BoolMetadataEntry { boolValue }
            }
          }
          ... on MaterializationEvent {
            assetKey { path }
            partition
            tags { key value }
            metadataEntries {
              label
              ... on TextMetadataEntry { text }
              ... on IntMetadataEntry { intValue }
            }
          }
        }
      }
    }
  }
}"""


class Site:
    def __init__(
        self, dev: DagsterDev, database_url: str, journal: Path, root: Path, env: dict[str, str]
    ) -> None:
        self.dev, self.database_url, self.journal, self.root = dev, database_url, journal, root
        self.env = env

    def partition_set(self) -> str:
        """The job's partition set, as the UI's Backfill dialog names it."""
        found = self.dev.graphql(PARTITION_SETS, {"repositorySelector": REPOSITORY, "job": JOB})[
            "partitionSetsOrError"
        ]
        assert found["__typename"] == "PartitionSets", found
        (partition_set,) = found["results"]
        assert partition_set["pipelineName"] == JOB
        return partition_set["name"]

    def backfill(self, config: dict, tags: dict[str, str] | None = None) -> list[dict]:
        """A backfill of the job over WINDOWS with run config ``config``; its finished runs."""
        params = {
            "selector": {
                "partitionSetName": self.partition_set(),
                "repositorySelector": REPOSITORY,
            },
            "partitionNames": [w.key for w in WINDOWS],
            "runConfigData": config,
            "fromFailure": False,
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        launched = self.dev.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def done() -> bool:
            found = self.dev.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            runs = found["runs"]
            return (
                found["status"] not in ("REQUESTED",)
                and len(runs) == len(WINDOWS)
                and all(r["status"] in FINISHED for r in runs)
            )

        wait_for(done, 240, f"backfill {backfill_id}", self.dev)
        found = self.dev.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert found["numPartitions"] == len(WINDOWS), found
        return [self.run(r["runId"]) for r in found["runs"]]

    def run(self, run_id: str) -> dict:
        return self.dev.graphql(RUN_EVENTS, {"id": run_id})["runOrError"]


def partition_of(run: dict) -> str:
    (key,) = [t["value"] for t in run["tags"] if t["key"] == "dagster/partition"]
    return key


def output_metadata(run: dict) -> dict[str, dict]:
    """The metadata entries of the run's one step output, by label."""
    (output,) = [
        e for e in run["eventConnection"]["events"] if e["__typename"] == "ExecutionStepOutputEvent"
    ]
    assert output["stepKey"] == "rebuild_fill_windows"
    return {entry["label"]: entry for entry in output["metadataEntries"]}


def materializations(run: dict) -> list[dict]:
    return [
        e for e in run["eventConnection"]["events"] if e["__typename"] == "MaterializationEvent"
    ]


def trade_ids(i: int) -> list[int]:
    """The fills of WINDOWS[i]."""
    return [1000 + 100 * i + j for j in range(FILLS)]


def write_journal(journal: Path) -> None:
    for i, window in enumerate([*WINDOWS, CURRENT]):
        fills = [fill(t, window.start_ms + 1000 * j) for j, t in enumerate(trade_ids(i))]
        write_segment(journal, window, "seg-1.jsonl", [*fills, "not json"])


@pytest.fixture(scope="module")
def site(
    pg_admin_url: str, schema_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """``dagster dev`` on a fresh instance database and a competition database (at schema head)
    whose WINDOWS were recorded by the older release, in this process, before it started."""
    root = tmp_path_factory.mktemp("rebuild-ui")
    journal, home = root / "journal", root / "dagster_home"
    journal.mkdir()
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    write_journal(journal)
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(pg_admin_url, schema_template))
        instance_url = stack.enter_context(fresh_database(pg_admin_url))
        with pytest.MonkeyPatch.context() as patch:
            old_release(patch)
            for window in WINDOWS:
                record_window(JournalSource(journal), CompetitionStore(database_url), window)
        env = dagster_dev_env(database_url, journal, sensor_running=False)
        env.update(DAGSTER_HOME=str(home), DAGSTER_POSTGRES_URL=instance_url)
        dev = stack.enter_context(run_dagster_dev(env, root / "dagster-dev.log"))
        yield Site(dev, database_url, journal, root, env)


@pytest.fixture(scope="module")
def dry_runs(site: Site) -> dict[str, dict]:
    """The dry-run backfill (the job's default config), launched before anything is applied:
    its runs by partition, and the tables before and after it."""
    before = snapshot(site.database_url)
    started = time.monotonic()
    runs = site.backfill({})
    print(f"dry-run backfill of {len(WINDOWS)} windows: {time.monotonic() - started:.1f}s")
    after = snapshot(site.database_url)
    return {"before": before, "after": after, "runs": runs, "fills": fills_table(site.database_url)}


@pytest.fixture(scope="module")
def applied_runs(site: Site, dry_runs: dict) -> list[dict]:
    """After the dry run, the backfill with mode apply and a reason: its finished runs."""
    mode = {"mode": {"apply": {"reason": REASON}}}
    config = {"ops": {"rebuild_fill_windows": {"config": mode}}}
    started = time.monotonic()
    runs = site.backfill(config)
    print(f"applied backfill of {len(WINDOWS)} windows: {time.monotonic() - started:.1f}s")
    return runs


def test_a_rebuild_backfill_dry_run_shows_the_fee_diff_and_an_applied_one_equals_a_fresh_recording(
    site: Site, dry_runs: dict, applied_runs: list[dict], pg_admin_url: str, schema_template: str
) -> None:
    old_fills = dry_runs["fills"]
    assert {row[4] for row in old_fills if row[2] == "maker"} == {OLD_FEE}  # the old rule's

    # The dry run: every run succeeded, nothing written, each diff names its window's fee changes.
    runs = dry_runs["runs"]
    assert [r["status"] for r in runs] == ["SUCCESS"] * len(WINDOWS), runs
    assert sorted(partition_of(r) for r in runs) == [w.key for w in WINDOWS]
    assert dry_runs["after"] == dry_runs["before"]  # byte for byte
    for run in runs:
        key = partition_of(run)
        metadata = output_metadata(run)
        diff = metadata["diff"]["mdStr"]
        row = next(line for line in diff.splitlines() if line.startswith(f"| {key} |"))
        assert f"| 2 -> {recording.RECORDING_VERSION} |" in row, diff
        assert f"| fee {FILLS} |" in row, diff  # the maker row of each fill: its fee
        i = [w.key for w in WINDOWS].index(key)
        samples = [line for line in diff.splitlines() if line.startswith("- ")]
        assert samples == [
            f"- `{key}` changed trade {t} {W2}: fee {OLD_FEE} -> {NEW_FEE}" for t in trade_ids(i)
        ], diff
        assert metadata["applied"]["boolValue"] is False
        assert not materializations(run)  # a dry run reports no new version of the partition

    # Applied through a second backfill with mode apply and a reason (the `applied` fixture).
    applied = applied_runs
    assert [r["status"] for r in applied] == ["SUCCESS"] * len(WINDOWS), applied

    with fresh_database(pg_admin_url, schema_template) as fresh_url:
        for window in WINDOWS:
            record_window(JournalSource(site.journal), CompetitionStore(fresh_url), window)
        assert fills_table(site.database_url) == fills_table(fresh_url)
    assert fills_table(site.database_url) != old_fills

    by_window = {partition_of(r): r["runId"] for r in applied}
    kept = query(
        site.database_url,
        "SELECT rebuild_id, window_start, change, trade_id, wallet, old_fee::text,"
        " changed_fields, version_from, version_to, reason FROM competition_fill_revisions"
        " ORDER BY window_start, trade_id",
    )
    expected = [
        (
            by_window[w.key],
            w.start,
            "changed",
            t,
            W2,
            OLD_FEE,
            "fee",
            2,
            recording.RECORDING_VERSION,
            REASON,
        )
        for i, w in enumerate(WINDOWS)
        for t in trade_ids(i)
    ]
    assert kept == expected
    assert not any(row[4] == W1 for row in kept)  # the taker rows were right already

    # Each run reported its window as a new materialization of the asset's partition.
    for run in applied:
        (event,) = materializations(run)
        assert event["assetKey"]["path"] == [ASSET]
        assert event["partition"] == partition_of(run)
        entries = {e["label"]: e for e in event["metadataEntries"]}
        assert entries["rebuild_id"]["text"] == run["runId"]
        assert entries["recording_version"]["intValue"] == recording.RECORDING_VERSION
        # Tagged with the code version it derives from, as the asset's own runs are.
        tags = {t["key"]: t["value"] for t in event["tags"]}
        assert tags["dagster/code_version"] == str(recording.RECORDING_VERSION)


def test_an_apply_without_a_reason_is_refused_at_launch_and_no_run_is_created(site: Site) -> None:
    """The Launchpad's launch (GraphQL ``launchRun``): Dagster's config validation refuses an
    apply without a reason before a run exists, naming the missing entry."""
    runs_before = site.dev.graphql("{ runsOrError { ... on Runs { count } } }")
    params = {
        "selector": {**REPOSITORY, "jobName": JOB},
        "runConfigData": {"ops": {"rebuild_fill_windows": {"config": {"mode": {"apply": {}}}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": WINDOWS[0].key}]},
    }
    query = LAUNCH_RUN.replace(
        "... on PythonError { message }",
        "... on PythonError { message }\n    ... on RunConfigValidationInvalid"
        " { errors { message } }",
    )
    launched = site.dev.graphql(query, {"params": params})["launchRun"]
    assert launched["__typename"] == "RunConfigValidationInvalid", launched
    assert any('"reason"' in error["message"] for error in launched["errors"]), launched
    assert site.dev.graphql("{ runsOrError { ... on Runs { count } } }") == runs_before


@pytest.mark.browser
def test_a_dry_run_rebuild_runs_page_shows_its_diff_in_the_browser(
    site: Site, dry_runs: dict, tmp_path: Path
) -> None:
    run = next(r for r in dry_runs["runs"] if partition_of(r) == WINDOWS[1].key)
    with sync_playwright() as playwright:
        browser: Browser = playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            base_url=site.dev.url, viewport={"width": 1400, "height": 900}
        )
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            page.goto(f"/runs/{run['runId']}")
            expect(page.get_by_text("Success", exact=True)).to_be_visible(timeout=60_000)
            # The step output's log row lists its metadata; the Markdown one opens in a dialog.
            output = page.get_by_text("[Show Markdown]").first
            expect(output).to_be_visible()
            page.screenshot(path=tmp_path / "run.png", full_page=True)
            output.click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text(WINDOWS[1].key)
            expect(dialog).to_contain_text(f"changed trade {trade_ids(1)[0]} {W2}: fee {OLD_FEE}")
            expect(dialog.get_by_role("cell", name=f"fee {FILLS}", exact=True)).to_be_visible()
            expect(
                dialog.get_by_role("cell", name=f"2 -> {recording.RECORDING_VERSION}", exact=True)
            ).to_be_visible()
            page.screenshot(path=tmp_path / "diff.png", full_page=True)
            print(f"screenshots {tmp_path / 'run.png'} {tmp_path / 'diff.png'}")
        except Exception:
            with suppress(Exception):
                page.screenshot(path=tmp_path / "failure.png", full_page=True)
            raise
        finally:
            context.close()
            browser.close()


STALENESS = """
query Staleness($partitions: [String!]!) {
  assetNodes(assetKeys: [{path: ["competition_fill_events"]}]) {
    opVersion
    staleStatus
    staleCauses { category reason }
    staleStatusByPartition(partitions: $partitions)
    staleCausesByPartition(partitions: $partitions) {
      key { path } partitionKey category reason dependency { path }
    }
  }
  assetOrError(assetKey: {path: ["competition_fill_events"]}) {
    ... on Asset {
      assetMaterializations(partitions: $partitions) { partition runId tags { key value } }
    }
  }
}"""
NEXT_VERSION = recording.RECORDING_VERSION + 1


def staleness(port: int, partitions: list[str]) -> dict:
    payload = post_graphql(port, STALENESS, {"partitions": partitions})
    assert "errors" not in payload, payload
    (node,) = payload["data"]["assetNodes"]
    events = payload["data"]["assetOrError"]["assetMaterializations"]
    latest: dict[str, dict] = {}
    for event in events:  # newest first
        latest.setdefault(event["partition"], event)
    node["codeVersionTags"] = {
        p: {t["key"]: t["value"] for t in e["tags"]}.get("dagster/code_version")
        for p, e in latest.items()
    }
    return node


@contextmanager
def next_release_webserver(site: Site) -> Iterator[int]:
    """A second webserver on the same instance whose code location is this code with
    RECORDING_VERSION one higher (as after a release bumping it): its port."""
    directory = site.root / "next-release"
    directory.mkdir(exist_ok=True)
    (directory / "next_release.py").write_text(
        "from competition_pipeline.recording import fill_events\n"
        f"fill_events.RECORDING_VERSION = {NEXT_VERSION}\n"
        "from competition_pipeline.definitions import defs  # noqa: E402,F401\n"
    )
    (directory / "workspace.yaml").write_text(
        "load_from:\n  - python_file:\n      relative_path: next_release.py\n"
        f"      location_name: competition_pipeline\n      working_directory: {REPO}\n"
    )
    port = free_port()
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    command = [webserver, "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    log = directory / "webserver.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, **site.env},
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with suppress(OSError, KeyError, TypeError, AssertionError):
                if staleness(port, [CURRENT.key])["opVersion"] == str(NEXT_VERSION):
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.browser
def test_a_code_version_change_shows_only_on_the_partition_not_on_the_asset(
    site: Site, applied_runs: list[dict], tmp_path: Path
) -> None:
    params = {"assetSelection": [{"path": [ASSET]}], "partitionNames": [CURRENT.key]}
    launched = site.dev.graphql(LAUNCH, {"params": {**params, "fromFailure": False}})
    backfill_id = launched["launchPartitionBackfill"]["backfillId"]

    def status() -> str:
        found = site.dev.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        return found["status"]

    wait_for(lambda: status() != "REQUESTED", 180, "the asset backfill", site.dev)
    assert status() == "COMPLETED_SUCCESS"
    keys = [CURRENT.key, WINDOWS[0].key]

    # This code: the asset's code version is the recording version; the partition is in sync.
    now = staleness(site.dev.port, keys)
    print(f"code version {recording.RECORDING_VERSION}: {now}")
    assert now["opVersion"] == str(recording.RECORDING_VERSION)
    assert now["codeVersionTags"][CURRENT.key] == str(recording.RECORDING_VERSION)
    # The window recorded by the asset and the one the rebuild replaced: both in sync.
    assert now["codeVersionTags"][WINDOWS[0].key] == str(recording.RECORDING_VERSION)
    assert now["staleStatusByPartition"] == ["FRESH", "FRESH"]
    assert now["staleCausesByPartition"] == [[], []]

    # The next release's code on the same instance: only the partition is unsynced.
    with next_release_webserver(site) as port:
        later = staleness(port, keys)
        print(f"code version {NEXT_VERSION}: {later}")
        assert later["opVersion"] == str(NEXT_VERSION)
        # Dagster 1.13 gives a partitioned asset no status of its own: always FRESH, no causes.
        assert later["staleStatus"] == "FRESH" and later["staleCauses"] == []
        assert later["staleStatusByPartition"] == ["STALE", "STALE"]  # recorded and rebuilt
        assert later["staleCausesByPartition"] == [
            [
                {
                    "key": {"path": [ASSET]},
                    "partitionKey": key,
                    "category": "CODE",
                    "reason": "has a new code version",
                    "dependency": None,
                }
            ]
            for key in keys
        ]
        # The partition's page shows it: an "Unsynced (1)" tag, a code version change.
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_executable(), args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            try:
                page.goto(
                    f"http://127.0.0.1:{port}/assets/{ASSET}?view=partitions&partition={CURRENT.key}"
                )
                tag = page.get_by_text("Unsynced (1)", exact=True)
                expect(tag).to_be_visible(timeout=60_000)
                tag.hover()
                expect(page.get_by_text("code version change").first).to_be_visible()
                page.screenshot(path=tmp_path / "unsynced.png", full_page=True)
                print(f"screenshot {tmp_path / 'unsynced.png'}")
            except Exception:
                with suppress(Exception):
                    page.screenshot(path=tmp_path / "failure.png", full_page=True)
                raise
            finally:
                browser.close()
