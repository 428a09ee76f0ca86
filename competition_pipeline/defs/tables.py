"""The store's tables as Dagster sees them: each asset's *Columns* tab, from the table definition.

Every column's meaning is written once, as its ``comment`` in ``store/tables.py``; this turns a
table into the ``dagster/column_schema`` the UI shows, with those comments as descriptions.
"""

import dagster as dg
import sqlalchemy as sa


def column_schema(table: sa.Table, *constraints: str) -> dg.TableSchema:
    """``table``'s columns, types, nullability and meanings, its primary key and ``constraints``
    (what the database enforces elsewhere, said in words)."""
    key = ", ".join(column.name for column in table.primary_key.columns)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=str(column.type),
                description=column.comment,
                constraints=dg.TableColumnConstraints(nullable=column.nullable is not False),
            )
            for column in table.columns
        ],
        constraints=dg.TableConstraints(other=[f"primary key ({key})", *constraints]),
    )
