"""The lifetime counters the exporter serves, and what keeps them from ever falling.

A counter is summed, at scrape time, over what the tables hold (each window's summary, the
quarantine table): nothing a process could forget. Retention drops months and a rebuild
replaces rows, and either would make such a sum fall, which Prometheus reads as a counter reset.
So whatever they take away is first kept in ``competition_fill_counter_offsets`` (in the same
transaction), and a counter is the sum over the tables plus its offsets: it never goes down,
whatever is retired, rebuilt, restarted, or served by a second exporter. What the tables hold
now is a level, served as a gauge. No Dagster here.
"""

from __future__ import annotations

from collections.abc import Mapping

from competition_pipeline.fills.contract import REJECT_RULES
from competition_pipeline.store.tables import COUNTER_OFFSETS, FILL_REJECTS, FILL_WINDOWS

#: Counter -> what one window's summary contributes to it (``summary`` JSON paths).
_FROM_SUMMARY = {
    "fills": "(summary->>'fills_recorded_or_present')::bigint",
    "rows": "(summary->'stored'->>'rows')::bigint",
    "conflicts": "(summary->'stored'->>'conflicts')::bigint",
}
#: The rule of a reject: its reason up to the first colon (a label of ``rejects``).
REJECT_RULE = "split_part(reason, ':', 1)"
_RULES = ", ".join(f"'{rule}'" for rule in REJECT_RULES)
#: A label as served: one of the closed set of rules (``fills.contract.REJECT_RULES``); a misfiled
#: fill's reason of older releases (``timestamp 1772... (2026-...``) is ``misfiled``; anything
#: else ``other``. So no input can make a series of its own.
_LABEL = f"""CASE WHEN metric <> 'rejects' OR label IN ({_RULES}) THEN label
    WHEN label ~ '^timestamp [0-9]' THEN 'misfiled' ELSE 'other' END"""

_SUMS = " UNION ALL ".join(
    f"SELECT '{name}', '', coalesce(sum({path}), 0) FROM {FILL_WINDOWS} w {{where}}"
    for name, path in _FROM_SUMMARY.items()
)
_REJECTS = f"SELECT 'rejects', {REJECT_RULE}, count(*) FROM {FILL_REJECTS} r {{where}} GROUP BY 2"

#: Every counter (metric, label, value): the tables' sums plus the offsets kept for them.
SQL_COUNTERS = f"""
SELECT metric, {_LABEL}, sum(amount)::bigint FROM (
    {_SUMS.format(where="")}
    UNION ALL {_REJECTS.format(where="")}
    UNION ALL SELECT metric, label, amount FROM {COUNTER_OFFSETS}
) c (metric, label, amount)
GROUP BY 1, 2 ORDER BY 1, 2"""

#: Retention: what the windows of ``[%(lo)s, %(hi)s)`` add to the counters, kept as offsets
#: (cause ``%(cause)s``) before they are deleted.
_MONTH = "WHERE window_start >= %(lo)s AND window_start < %(hi)s"
SQL_KEEP_MONTH = f"""
INSERT INTO {COUNTER_OFFSETS} (metric, label, amount, cause)
SELECT metric, label, amount, %(cause)s FROM (
    {_SUMS.format(where=_MONTH)}
    UNION ALL {_REJECTS.format(where=_MONTH)}
) c (metric, label, amount)
WHERE amount > 0"""


def counters_of(
    summary: Mapping | None, rejects_by_rule: Mapping[str, int]
) -> dict[tuple[str, str], int]:
    """What one window contributes to the counters, from its summary and its rejects by rule
    (the same sums :data:`SQL_COUNTERS` makes in SQL)."""
    summary = summary or {}
    stored = summary.get("stored") or {}
    counters = {
        ("fills", ""): int(summary.get("fills_recorded_or_present") or 0),
        ("rows", ""): int(stored.get("rows") or 0),
        ("conflicts", ""): int(stored.get("conflicts") or 0),
    }
    counters.update({("rejects", rule): n for rule, n in rejects_by_rule.items()})
    return counters
