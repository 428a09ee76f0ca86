"""Benchmark: the pipeline against a plain COPY of the same rows, measured in one run.

    competition-pipeline bench [--fills 1000000] [--json bench.json]

Figures (one run, one database, so they are comparable as ratios on a noisy machine):

a. plain COPY of the window's rows into an empty copy of ``competition_fill_events`` (baseline),
   the rows written with psycopg's ``write_row`` from ready-made tuples; a'. the same rows as
   COPY text the server formatted itself, which measures the server alone; and a2. the same rows
   with their keys COPYed first into an empty copy of ``competition_fill_keys``, in one
   transaction: what the product must write at the least (its key registry keeps
   ``(trade_id, wallet)`` unique across the monthly partitions), the fair baseline for (b);
b. the first recording of one window of N fills through the asset's code path
   (``pipeline.record_window``: read + parse + validate + rows + load), in a child process;
c. recording the unchanged window again;
d. the peak RSS of the child process that ran (b);
e. one sensor tick (scan + decision) over a journal of 10,000 hour directories;
f. a 30-day hourly backfill as one Dagster run (``materialize`` of the asset and its checks over
   the partition range) on PostgreSQL instance storage, as deployed (a fresh database, the
   storage classes of ``competition_pipeline.instance_storage``), beside Dagster's own floor
   measured in the same run: a no-op asset over the same range yielding the same events (one
   materialization and three check evaluations a window) on another fresh instance database;
h. the whole user path: ``dagster asset materialize`` of the (a) window in a subprocess, with its
   checks, on PostgreSQL instance storage, first and unchanged, with the time of each step.
g. with ``--stored-rows N``: the first recording of a window of ``--fills`` fills into an empty
   table, then of another such window once N rows are stored in the months before it (own
   database; the rows generated server-side, untimed): the ratio shows whether the load rate
   stays flat as the table grows.

w. with ``--only-w``: ``--windows`` windows recorded as one run each by the journal sensor, on the
   service host (``DefaultRunLauncher``), then through ``CeleryRunLauncher`` on 1 and on 2 worker
   hosts (network namespaces; :mod:`.workers`): the launcher's overhead and exactness, not a
   speed-up, on a 2-core machine.

Without ``--database-url`` it runs on a throwaway embedded PostgreSQL; with one, it creates and
drops a database of its own there (the role needs CREATEDB) and never touches existing tables.

i. with ``--only-i``: the local start (``competition-pipeline up``: dagster dev, PostgreSQL
   instance storage, the simulator at ``--live-rate`` fills/s) following the open hour: the lag
   of every fill from its append to its commit and to the standings, runs and event-log rows per
   hour, CPU; ``--live-code DIR`` measures another checkout's code (the figure before a change).

Figure modules: :mod:`.baseline` (a), :mod:`.sensor` (e), :mod:`.dagster_runs` (f, h),
:mod:`.growth` (g), :mod:`.live` (i), :mod:`.workers` (w); b, c and d are the recording in a
child process (:mod:`.common`); :mod:`.command` runs them all.
"""
