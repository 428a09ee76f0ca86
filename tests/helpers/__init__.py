"""What the test modules share, imported and never collected: journal writing (``journal``),
in-process Dagster runs (``runs``), SQL on a database URL (``sql``), the code location as the
tests build it (``location``), ``dagster dev`` and GraphQL (``dagster_dev``), the settings of
every test process (``environment``). A test module imports from here, never from another
test module."""
