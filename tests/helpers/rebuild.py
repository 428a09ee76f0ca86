"""A release of the recording rules other than this code's, and the tables a rebuild touches, for
the tests of changing recorded history."""

from __future__ import annotations

import msgspec
import pytest

from competition_pipeline.fills import rows
from competition_pipeline.fills.contract import Fill
from competition_pipeline.recording import fill_events as recording
from tests.helpers.journal import W1
from tests.helpers.sql import query

#: Every table a rebuild may touch, compared whole before and after.
TABLES = (
    "competition_fill_events",
    "competition_fill_keys",
    "competition_fill_rejects",
    "competition_fill_conflicts",
    "competition_fill_windows",
    "competition_fill_retired",
    "competition_fill_rebuilds",
    "competition_fill_revisions",
    "competition_fill_counter_offsets",
    "competition_standings",
)


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of every table a rebuild may touch, as text, in a stable order."""
    return {
        table: query(url, f"SELECT t::text FROM {table} t ORDER BY 1")  # noqa: S608
        for table in TABLES
    }


def fills_table(url: str) -> list[tuple]:
    return query(
        url,
        "SELECT trade_id, wallet, role, side, fee::text, price::text, fill_ts, window_start"
        " FROM competition_fill_events ORDER BY trade_id, wallet",
    )


def old_release(monkeypatch: pytest.MonkeyPatch, version: int = 2) -> None:
    """The rules of an earlier release: the maker's fee taken from ``fee`` (the taker's), not
    ``accounting.maker_fee``; recorded under an older RECORDING_VERSION."""

    def old_rows(fill: Fill, *args):
        return rows.fill_rows(msgspec.structs.replace(fill, maker_fee=fill.taker_fee), *args)

    monkeypatch.setattr(recording, "fill_rows", old_rows)
    monkeypatch.setattr(recording, "RECORDING_VERSION", version)


def self_trade_as_two_rows(fill: Fill, *args) -> list[tuple]:
    """An older self-trade rule: a taker row and a maker row (the maker's wallet shown as W1)
    instead of one ``self`` row; any other fill as today."""
    if fill.taker_wallet != fill.maker_wallet:
        return rows.fill_rows(fill, *args)
    wallet = fill.maker_wallet
    taker, _ = rows.fill_rows(msgspec.structs.replace(fill, maker_wallet=W1), *args)
    maker = rows.named(taker)._replace(
        wallet=W1, role="maker", side="Sell", counterparty=wallet, is_self_trade=False
    )
    return [taker, tuple(maker)]


def other_rules(monkeypatch: pytest.MonkeyPatch, fill_rows, version: int = 2) -> None:
    """Record with ``fill_rows`` as the release's row rule, under ``version``."""
    monkeypatch.setattr(recording, "fill_rows", fill_rows)
    monkeypatch.setattr(recording, "RECORDING_VERSION", version)
