"""The Dagster layer: thin wrappers over the core, each module named after what it wraps.

Importing any of it sets, once and here only, the warning filters for the Dagster features this
project uses on purpose although Dagster 1.13 marks them beta or preview: without them every code
server start, run and CLI call would print the same warnings.
"""

import warnings

import dagster as dg

# A backfill is one run (``BackfillPolicy.single_run``, beta).
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
# The per-window checks are partitioned like the asset (partitioned asset checks are preview).
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)
# The UI links each asset to its source (code references, beta).
warnings.filterwarnings(
    "ignore",
    message="(Class|Function) `(with_source_code_references|LocalFileCodeReference"
    "|CodeReferencesMetadataValue)`",
    category=dg.BetaWarning,
)
