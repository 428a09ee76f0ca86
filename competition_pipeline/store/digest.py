"""The order-independent digest of a window's rows, computed alike over staged and stored rows.

Three users, hence a module of its own: the load records the digest of the rows the journal gave,
the store computes it over the rows stored now, and the reconciliation compares the two (and
hashes rows the same way when it compares row by row). No Dagster here.
"""

from __future__ import annotations

from dataclasses import dataclass

from competition_pipeline.fills.rows import ROW_FIELDS
from competition_pipeline.store.tables import FILL_EVENTS, WINDOW_ROWS


@dataclass(frozen=True, slots=True)
class RowsDigest:
    """An order-independent digest of a set of rows: their count and the sum of a 64-bit hash of
    each row's key and content. Computed by PostgreSQL alike over staged and stored rows, so a
    deleted, added or changed row changes it whatever the order the rows were read in."""

    rows: int
    hash_sum: int

    def as_dict(self) -> dict[str, int | str]:
        # A string: the sum of millions of 64-bit hashes outgrows what JSON numbers hold exactly.
        return {"rows": self.rows, "hash_sum": str(self.hash_sum)}

    @classmethod
    def from_dict(cls, data: dict) -> RowsDigest:
        return cls(int(data["rows"]), int(data["hash_sum"]))

    def __add__(self, other: RowsDigest) -> RowsDigest:
        return RowsDigest(self.rows + other.rows, self.hash_sum + other.hash_sum)


def _row_hash(alias: str, *, staged: bool) -> str:
    """SQL: a 64-bit hash of a row's key and content (every stored column that comes from the
    journal), the same for a staged row (ms timestamps) and the row it is stored as.

    ``hash_record_extended`` (PostgreSQL 14+) hashes each field with its type's own hash, so no
    field is formatted as text: half the cost of hashing the row's text. The staged and stored
    columns have the same types (rows.ROW_TYPES, tables.fill_events), the stored timestamp is
    turned back into the staged milliseconds. A numeric is hashed by value (1.50 and 1.5 are the
    same price); NULL fields hash alike on both sides."""
    fields = [
        f"(extract(epoch FROM {alias}.fill_ts) * 1000)::bigint"
        if column == "fill_ts_ms" and not staged
        else f"{alias}.{column}"
        for column in ROW_FIELDS[3:]
    ]
    return f"hash_record_extended(ROW({', '.join(fields)}), 0)"


# The hash of a staged row aliased ``s`` and of a stored row aliased ``e``.
STAGED_HASH = _row_hash("s", staged=True)
STORED_HASH = _row_hash("e", staged=False)
# sum(bigint) is exact (numeric result) and adds in 128-bit integers: half the cost of summing
# numerics, the same value.
SQL_DIGEST = "SELECT count(*), coalesce(sum({hash}), 0) FROM {source}"
# The digest of the rows stored for a window: its fill_ts range too, so one month's partition is
# read (a filter on window_start alone scanned every month).
SQL_STORED_DIGEST = SQL_DIGEST.format(
    hash=STORED_HASH, source=f"{FILL_EVENTS} e WHERE {WINDOW_ROWS}"
)
