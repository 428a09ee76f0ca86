"""The test harness of competition-pipeline (distribution ``competition-pipeline-harness``,
``harness/`` in the repository): the chaos soak (:mod:`.soak`), the worker hosts in network
namespaces (:mod:`.hosts`), the replicated PostgreSQL of the failover tests (:mod:`.replication`)
and the benchmark (:mod:`.bench`, :mod:`.bench_floor`). Never part of the product's wheel; it
imports the product, the product never imports it (``lint-imports``)."""
