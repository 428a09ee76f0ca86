"""Dagster's ``DefaultRunLauncher``, with a code server that is shutting down treated as one that
is unreachable.

A ``dagster api grpc`` code server told to shut down (SIGTERM in a deploy, a local stop) keeps
serving until its runs end: it still answers the sensors, but refuses ``StartRun`` with "Tried to
start a run on a server after telling it to shut down". Dagster's launcher raises that as
``DagsterLaunchFailedError``, which the run queue treats as unrecoverable: the run (in practice the
new hour's follower, requested while a deploy falls on the hour's turn) ended FAILURE and alerted.
Raised as ``DagsterUserCodeUnreachableError`` instead, the queue keeps the run and launches it again
after ``run_queue.user_code_failure_retry_delay`` seconds, on the new server (``dagster.yaml``:
3 retries, 10 s apart), exactly as it does for a code server that is already down.
"""

from dagster import DefaultRunLauncher

from competition_pipeline.defs.dagster_internals import (
    DagsterLaunchFailedError,
    DagsterUserCodeUnreachableError,
    LaunchRunContext,
)

# The refusal's text in Dagster's gRPC server and its proxy server (1.13.27): Dagster gives it no
# error class or code of its own.
SHUTTING_DOWN = "after telling it to shut down"


class GrpcRunLauncher(DefaultRunLauncher):
    """Each run a subprocess of the code server (as ``DefaultRunLauncher``); no configuration."""

    def launch_run(self, context: LaunchRunContext) -> None:
        try:
            super().launch_run(context)
        except DagsterLaunchFailedError as error:
            if SHUTTING_DOWN not in str(error):
                raise
            raise DagsterUserCodeUnreachableError(
                f"the code server is shutting down and refused run {context.dagster_run.run_id};"
                " the run queue launches it again on the next server"
            ) from error
