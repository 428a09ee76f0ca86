"""Runs on other hosts: which host executed a run, and a refusal to record under other rules.

With ``CeleryRunLauncher`` (docs/operations.md, section 8) a run executes on whichever worker host
takes its task; the run tag ``competition/host`` and the materialization's ``host`` say which.
Before recording, the asset compares the fingerprint the code server stamped on its definition
(:mod:`competition_pipeline.deployment`, kept in the run's job snapshot) with the worker's own;
a worker with other code or other rule settings fails the run, naming what differs.
"""

import socket

import dagster as dg

from competition_pipeline import deployment
from competition_pipeline.defs.failures import refused
from competition_pipeline.settings import Settings

#: The asset's op tag holding the code server's fingerprint (JSON).
DEPLOYMENT_TAG = "competition/deployment"
#: The run tag naming the host that executed the run's fill step.
HOST_TAG = "competition/host"


def deployment_op_tags(settings: Settings) -> dict[str, str]:
    return {DEPLOYMENT_TAG: deployment.encode(deployment.fingerprint(settings))}


def _stamped(context: dg.AssetExecutionContext) -> str | None:
    """The fingerprint the run was planned with: the asset op's tag in the run's job snapshot
    (written by the process that created the run: the code server, the webserver's, or
    ``materialize`` in process)."""
    snapshot_id = context.run.job_snapshot_id
    if snapshot_id is None:
        return None
    snapshot = context.instance.get_job_snapshot(snapshot_id)
    for op in snapshot.node_defs_snapshot.op_def_snaps:
        if op.name == context.op_def.name:
            return op.tags.get(DEPLOYMENT_TAG)
    return None


def check_deployment(context: dg.AssetExecutionContext, settings: Settings) -> None:
    """Fail the step (no retry: another attempt on this host would differ the same way) when
    this worker's code or rule settings differ from the ones the run was planned with."""
    if context.run.job_snapshot_id is None:
        return
    own = deployment.fingerprint(settings)
    stamped = _stamped(context)
    if stamped is None:
        problem = "the run was planned without a deployment fingerprint (an older release)"
    else:
        problem = deployment.mismatch(deployment.decode(stamped), own)
    if problem is not None:
        raise refused(
            f"host {socket.gethostname()} refuses to record: its code or settings differ from"
            f" the code server's that planned run {context.run.run_id} ({problem}); deploy the"
            " same release and FILL_* values on every worker (docs/operations.md, section 8)."
            " Nothing recorded"
        )


def tag_host(context: dg.AssetExecutionContext) -> str:
    """Record on the run which host executes it; the host name is returned for the metadata."""
    host = socket.gethostname()
    context.instance.add_run_tags(context.run.run_id, {HOST_TAG: host})
    return host
