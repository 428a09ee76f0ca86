"""Every name this project takes from Dagster's private ``dagster._core`` packages, in one file.

Dagster does not export these (run tags, storage tables, record statuses) from ``dagster``; they
move between releases. Importing them only from here, in the package and in the tests
(``tests/unit/test_dagster_internals.py`` checks it), means a Dagster upgrade that moves one
touches this file alone. ``RunsFilter`` and ``RunRecord`` are public (``dagster.RunsFilter``).
``InMemoryJob`` and ``execute_run`` are the tests' (a run created by one job definition and
executed by another, as on a worker host); ``ExecuteRunArgs`` and ``pack_value`` the soak's (a
run's Celery task sent again as ``CeleryRunLauncher`` sent it); the launch errors and
``LaunchRunContext`` the run launcher's (``defs/grpc_launcher.py``).
"""

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.errors import DagsterLaunchFailedError, DagsterUserCodeUnreachableError
from dagster._core.execution.api import execute_run
from dagster._core.launcher import LaunchRunContext
from dagster._core.scheduler.instigation import InstigatorType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    WILL_RETRY_TAG,
)
from dagster._grpc.types import ExecuteRunArgs
from dagster_shared.serdes import pack_value

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "PARTITION_NAME_TAG",
    "WILL_RETRY_TAG",
    "AssetCheckEvaluationTargetMaterializationData",
    "AssetCheckExecutionRecordStatus",
    "AssetCheckExecutionsTable",
    "DagsterLaunchFailedError",
    "DagsterUserCodeUnreachableError",
    "ExecuteRunArgs",
    "FreshnessState",
    "InMemoryJob",
    "InstigatorType",
    "LaunchRunContext",
    "execute_run",
    "pack_value",
]
