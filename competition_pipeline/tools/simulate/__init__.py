"""A stand-in for the matching engine: writes a fill journal as ``contracts/fill-journal.md`` says.

The demo, the tests and the benchmarks need a journal that looks like the engine's (sections 1 and
3). :mod:`.messages` renders the engine's messages (deterministic for a seed),
:mod:`.journal_writer` files them as journal segments, :mod:`.command` is
``competition-pipeline simulate``.

Trade ids never collide between the simulators this package creates by default (and the
command's): hour ``h`` (hours since the epoch) owns ``[h * 10**10, (h + 1) * 10**10)``;
:func:`write_hour` uses the lower half of its hour and :func:`append_live` the upper half of the
hour it starts in, offset by the millisecond, so restarting the demo never reuses an id with
different content.
"""

from competition_pipeline.tools.simulate.journal_writer import (
    CHUNK_FILLS,
    HourStats,
    LiveStats,
    append_live,
    write_hour,
)
from competition_pipeline.tools.simulate.messages import (
    Batch,
    FillSimulator,
    default_trade_id_base,
)

__all__ = [
    "CHUNK_FILLS",
    "Batch",
    "FillSimulator",
    "HourStats",
    "LiveStats",
    "append_live",
    "default_trade_id_base",
    "write_hour",
]
