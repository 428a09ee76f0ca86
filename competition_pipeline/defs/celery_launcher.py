"""``CeleryRunLauncher`` as this project runs it: dagster-celery's launcher, minus its worker
health check.

dagster-celery 0.29.27 reports a run's worker health from the Celery task's state in the result
backend, and run monitoring fails (or resumes) every STARTED run whose state is not STARTED or
SUCCESS. Neither reading holds here: with the ``rpc://`` backend a task's state reaches only the
process that sent it, so after a daemon restart every running task reads PENDING and live runs
would be failed mid-load; and a worker host killed outright leaves its task STARTED for ever, so
the check never finds the runs that are really lost. A lost run is found by the fill sensors'
liveness rule instead (defs/follow.py: a started run whose liveness lock no connection holds),
which works the same on every launcher. Run monitoring keeps its start and cancel timeouts.
"""

from dagster_celery.launcher import CeleryRunLauncher as _CeleryRunLauncher


class CeleryRunLauncher(_CeleryRunLauncher):
    """Each run a Celery task on whichever worker takes it (the configuration is dagster-celery's:
    ``broker``, ``backend``, ``include``, ``default_queue``, ``config_source``)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return False
