"""PostgreSQL: the competition store (connections, reads, locks) and its load sessions.

The concerns live in small modules beside this one: :mod:`~competition_pipeline.store.tables`
(names and metadata), :mod:`~competition_pipeline.store.load` (one window's transaction: staging,
fast and careful paths), :mod:`~competition_pipeline.store.compare` (the reconciliation's read-only
comparison) and :mod:`~competition_pipeline.store.digest` (the rows' digest). This module opens
the connections they run on, and is the one error boundary: every driver error becomes a
:class:`StoreError` in :func:`wrap_errors`, which alone decides whether it is worth a retry.

How the rest of the package uses the store (checked: pyproject.toml's import-linter contract "The
store's internals ..."): this module is the entry point of recording, reading and locking windows,
and re-exports the names that go with them (table names, counts, the reconciliation); a few other
concerns have a public module of their own, each a facade over its SQL: ``standings``
(competitions), ``rebuild`` (the rebuild session), ``months`` (partitions and retention),
``summary`` (a window's stored summary), ``counters`` (the exporter's lifetime counters),
``tables`` (the metadata, for column schemas), ``dburl`` (URL forms and redaction) and ``schema``
(Alembic). ``load``, ``compare``, ``digest``, ``rebuild_sql`` and ``totals`` are the store's
internals: used only inside ``store/``. One module re-exporting all of it would be a grab bag;
a module per concern is found by its name. No Dagster here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from competition_pipeline.errors import PipelineError, TerminalError, TransientError, with_kind
from competition_pipeline.fills.windows import Window
from competition_pipeline.store import dburl, schema
from competition_pipeline.store.compare import Reconciliation, WindowComparison
from competition_pipeline.store.digest import SQL_STORED_DIGEST, RowsDigest
from competition_pipeline.store.load import (
    SQL_STAGE,
    LoadCounts,
    StoredCounts,
    WindowLoad,
    lock_window,
)
from competition_pipeline.store.summary import WindowSummary
from competition_pipeline.store.tables import (
    FILL_CONFLICTS,
    FILL_EVENTS,
    FILL_FOLLOWERS,
    FILL_KEYS,
    FILL_REBUILDS,
    FILL_REJECTS,
    FILL_RETIRED,
    FILL_WINDOWS,
    fill_events,
    metadata,
    window_params,
)
from competition_pipeline.store.totals import (
    SQL_RECOUNT_WINDOW,
    SQL_WINDOW_MISMATCHES,
    TOTAL_COLUMNS,
)

__all__ = [
    "FILL_CONFLICTS",
    "FILL_EVENTS",
    "FILL_KEYS",
    "FILL_REJECTS",
    "FILL_WINDOWS",
    "CommittedWindow",
    "CompetitionStore",
    "Lease",
    "LeaseLost",
    "LoadCounts",
    "LoadSession",
    "PreviousLoad",
    "Reconciliation",
    "RowsDigest",
    "StoreError",
    "StoreTerminalError",
    "StoreTransientError",
    "StoredCounts",
    "TOTAL_COLUMNS",
    "fill_events",
    "metadata",
    "is_transient",
    "wrap_errors",
]

# A run's liveness lock (first key; second key: hashtext(run_id), made non-negative): held by the
# run's worker on its own connection, so PostgreSQL releases it the moment the worker dies.
_RUN_LOCK_NAMESPACE = 0x6371


#: Set on every session the store opens: the server itself notices a dead or cut-off client within
#: about 25 s (keepalive probes after 10 s idle, every 5 s, 3 unanswered) or 30 s of unacknowledged
#: data (tcp_user_timeout), and ends its session, which frees the session's advisory locks (a
#: run's liveness lock): the kernel's defaults leave it two hours. client_connection_check_interval
#: also ends a query still running for a client that went away. All user-settable (PostgreSQL 12+;
#: 14+ for the check interval); over a Unix socket the tcp_ ones do nothing. docs/operations.md.
SESSION_SETTINGS = {
    "tcp_keepalives_idle": ("10", 0),
    "tcp_keepalives_interval": ("5", 0),
    "tcp_keepalives_count": ("3", 0),
    "tcp_user_timeout": ("30000", 120000),  # (value, the first server_version that has it)
    "client_connection_check_interval": ("10000", 140000),
}


def _session_settings(server_version: int) -> str:
    return "; ".join(
        f"SET {name} = {value}"
        for name, (value, since) in SESSION_SETTINGS.items()
        if server_version >= since
    )


class StoreError(PipelineError):
    """A database failure, with a message that names the cause and never the password: a
    :class:`StoreTransientError` (retry: the next attempt reconnects through the URL's hosts) or a
    :class:`StoreTerminalError` (fail once). ``StoreError(message, retryable=...)`` builds the one
    of the two that ``retryable`` says (the older call form)."""

    def __new__(cls, message: str = "", *, retryable: bool | None = None) -> StoreError:
        if cls is StoreError:
            cls = with_kind(cls, retryable, StoreTransientError, StoreTerminalError)
        return super().__new__(cls, message)

    def __init__(self, message: str = "", *, retryable: bool | None = None) -> None:
        super().__init__(message)


class StoreTransientError(StoreError, TransientError):
    """The server went away, failed over, restarted, or refused the statement for now (a
    standby's read-only transaction, a serialization failure, a deadlock, too many clients)."""


class StoreTerminalError(StoreError, TerminalError):
    """The rights, the schema, the data or the URL: another attempt would fail the same way."""


# SQLSTATE classes and codes that another attempt may not meet (PostgreSQL, Appendix A):
# 08 connection exception, 40 transaction rollback (40001 serialization failure, 40P01
# deadlock), 53 insufficient resources (53300 too many connections), 57 operator intervention
# (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now; 57P04 database dropped
# is terminal), 58 system error; 25006 read-only transaction (a standby reached, or a primary
# demoted under us), 55P03 lock not available, 55006 object in use.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_CODES = {"25006", "55P03", "55006"}
_TERMINAL_CODES = {"57P04"}
# A failed connection carries no SQLSTATE (libpq reports it as text): these say the server was
# reached and refused this client for good (28000/28P01, 3D000, 42501 at connect time).
_TERMINAL_CONNECT = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "no password supplied",
    "invalid connection option",
    "invalid sslmode value",
    "invalid target_session_attrs value",
    "could not translate host name",
)


def is_transient(exc: BaseException) -> bool:
    """Transient (the server, the network, a failover: worth a retry) or terminal (SQL, data,
    rights, the URL), from the SQLSTATE where the server sent one, else from libpq's text."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is not None:
        if state in _TERMINAL_CODES:
            return False
        return state in _TRANSIENT_CODES or state[:2] in _TRANSIENT_CLASSES
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        text = str(exc).lower()
        return not any(phrase in text for phrase in _TERMINAL_CONNECT)
    return False


@contextmanager
def wrap_errors(doing: str, url: str) -> Iterator[None]:
    """The store's error boundary: a driver error raised in the block (psycopg's own, or wrapped
    by SQLAlchemy) leaves it as a :class:`StoreTransientError` or :class:`StoreTerminalError`
    (:func:`is_transient`) naming what was being done, on which database, and the cause,
    scrubbed of the password; a schema that this role cannot bring to head is terminal. A
    :class:`StoreError` from an inner boundary passes unchanged."""
    try:
        yield
    except StoreError:
        raise
    except schema.SchemaError as exc:
        raise StoreTerminalError(dburl.scrub(str(exc), url)) from None
    except (psycopg.Error, sa.exc.DBAPIError) as exc:
        cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        detail = " ".join(str(cause).split()) if cause is not None else "unknown error"
        kind = type(cause).__name__ if cause is not None else "Error"
        state = getattr(cause, "sqlstate", None)
        code = f" (SQLSTATE {state})" if state else ""
        message = dburl.scrub(f"{doing} {dburl.redacted(url)}: {kind}: {detail}{code}", url)
        if is_transient(exc):
            raise StoreTransientError(message) from None
        raise StoreTerminalError(message) from None


class LeaseLost(Exception):
    """A follower's load refused: its run no longer holds the hour (a newer follower took it over,
    or it was handed back). Nothing of that load was committed."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A run's hold on an hour (``competition_fill_followers``): the generation it took. Each load
    of the follower checks it under the row's lock, in the load's own transaction (fencing)."""

    window: Window
    run_id: str
    generation: int
    #: The run that held the hour before (taken over), if any.
    previous_run: str | None = None

    def check(self, conn: psycopg.Connection) -> None:
        """Raise :class:`LeaseLost` unless this run still holds the hour (the row stays locked
        until the load commits: a takeover waits for it, and the load after it is refused)."""
        held = conn.execute(
            f"UPDATE {FILL_FOLLOWERS} SET heartbeat_at = now()"
            " WHERE window_start = %s AND run_id = %s AND generation = %s RETURNING 1",
            (self.window.start, self.run_id, self.generation),
        ).fetchone()
        if held is None:
            row = conn.execute(
                f"SELECT run_id, generation FROM {FILL_FOLLOWERS} WHERE window_start = %s",
                (self.window.start,),
            ).fetchone()
            holder = "nobody (handed back)" if row is None or row[0] is None else f"run {row[0]}"
            generation = row[1] if row is not None else "?"
            raise LeaseLost(
                f"{self.window.key}: run {self.run_id} no longer holds the hour (generation"
                f" {self.generation}); it is held by {holder} at generation {generation}"
            )


@dataclass(frozen=True, slots=True)
class Unheld:
    """A load allowed only while no follower holds the window (the closing hour's follower
    bridging into the next hour until that hour's own follower has started)."""

    window: Window

    def check(self, conn: psycopg.Connection) -> None:
        row = conn.execute(
            f"SELECT run_id FROM {FILL_FOLLOWERS} WHERE window_start = %s AND run_id IS NOT NULL"
            " FOR SHARE",
            (self.window.start,),
        ).fetchone()
        if row is not None:
            raise LeaseLost(f"{self.window.key} is followed by run {row[0]}")


Fence = Lease | Unheld


@dataclass(frozen=True, slots=True)
class PreviousLoad:
    """A window's latest committed load (``competition_fill_windows``) and what the window holds
    now: ``intact`` when its stored rows, rejects and conflicts are what that load left."""

    extent: dict[str, int]
    summary: WindowSummary
    now: StoredCounts | None = None

    @property
    def positions(self) -> dict[str, dict] | None:
        """The committed read offsets (journal), or None (never kept: stream, older releases)."""
        return self.summary.positions

    @property
    def stored(self) -> StoredCounts | None:
        return self.summary.stored

    @property
    def intact(self) -> bool:
        return self.now is not None and self.now == self.stored

    @property
    def rows_digest(self) -> RowsDigest | None:
        """The digest of the rows the journal gave this load (see :class:`RowsDigest`)."""
        return self.summary.rows_digest


@dataclass(frozen=True, slots=True)
class CommittedWindow:
    """What a window has durably recorded: journal offsets, its extent (the stream position under
    ``nats:<stream>``), and when (a token that changes with every commit)."""

    positions: dict[str, dict] | None
    extent: dict[str, int]
    recorded_at: str


class LoadSession:
    """An open connection that loads windows one after another, each in its own transaction.

    A backfill records hundreds of windows in one run: one connection and one set of staging
    tables for all of them keeps the per-window cost to the statements that window needs.
    """

    def __init__(self, store: CompetitionStore, conn: psycopg.Connection) -> None:
        self._store = store
        self._conn = conn
        self._months: set[dt.date] = set()  # months this session has made sure exist

    @contextmanager
    def window(self, window: Window, fence: Fence | None = None) -> Iterator[WindowLoad]:
        """One window's transaction, under the window's advisory lock (its month created first,
        once per month and session: a backfill's windows share a few months, and the check is
        a transaction of its own, paid per window before). With ``fence``, the transaction
        first checks it (a follower's lease) and raises :class:`LeaseLost`, writing nothing,
        when it does not hold."""
        conn = self._conn
        with self._store.wrap_errors("database error in"):
            month = window.start.date().replace(day=1)
            if month not in self._months:
                self._store.ensure_month(conn, window)
                self._months.add(month)
            with conn.transaction():
                lock_window(conn, window)
                if fence is not None:
                    fence.check(conn)
                yield WindowLoad(conn, window)


_REBUILD_FIELDS = ("rebuild_id", "kind", "applied_at", "windows", "reason", "undone_by")


class CompetitionStore:
    """The competition database at ``url`` (any accepted PostgreSQL URL form)."""

    def __init__(self, url: str, *, connect_timeout: int | None = None) -> None:
        parsed = dburl.parse(url)  # fail early, without echoing the URL, when it is not one
        self._url = url
        # An explicit timeout stands in for DATABASE_CONNECT_TIMEOUT; the URL's own still wins.
        self._overrides = (
            {"connect_timeout": connect_timeout}
            if connect_timeout is not None and "connect_timeout" not in parsed.query
            else {}
        )
        self._conninfo = dburl.libpq(url)
        self._shared: psycopg.Connection | None = None
        self._sharing = False

    @property
    def display_url(self) -> str:
        return dburl.redacted(self._url)

    def wrap_errors(self, doing: str) -> AbstractContextManager[None]:
        """This database's error boundary (:func:`wrap_errors`)."""
        return wrap_errors(doing, self._url)

    def connect(self) -> psycopg.Connection:
        with self.wrap_errors("cannot connect to"):
            conn = psycopg.connect(
                self._conninfo, application_name="competition-pipeline", **self._overrides
            )
            try:
                # Outside a transaction, so that no rollback can undo them.
                conn.autocommit = True
                conn.execute(_session_settings(conn.info.server_version))  # type: ignore[arg-type]
                conn.autocommit = False
            except BaseException:
                conn.close()
                raise
            return conn

    def engine(self) -> sa.Engine:
        """A SQLAlchemy engine over the same connections (for schema work and ad-hoc reads)."""
        return sa.create_engine("postgresql+psycopg://", creator=self.connect, poolclass=NullPool)

    def ensure_schema(self) -> list[str]:
        """Bring the tables to the head revision (Alembic ``upgrade head`` under the schema lock;
        idempotent, race-free); returns the revisions applied. First, once per process and
        database, :meth:`require_sessions`: every entry point (code location, CLI) starts here."""
        self.require_sessions()
        with self.wrap_errors("cannot migrate the schema in"):
            return schema.upgrade(self.engine(), self.display_url)

    def require_sessions(self) -> None:
        """Fail, naming the cause, when a connection's statements do not all run in one server
        session: a pooler in transaction or statement mode (PgBouncer ``pool_mode=transaction``)
        hands each transaction to whichever server connection is free, which breaks the
        per-window and per-run advisory locks, the load sessions' staging tables and session
        settings. Detected, not guessed: connection A reads its backend's pid; connection B
        opens a transaction (a pooler lends it the server connection A just released, the most
        recently used one); A reads its pid again. Direct, or through a session-mode pooler, A
        keeps its backend and both pids are equal; the check cannot fire wrongly."""
        with self.wrap_errors("cannot check the sessions of"):
            with closing(self.connect()) as a, closing(self.connect()) as b:
                a.autocommit = True
                (first,) = a.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
                b.execute("SELECT pg_backend_pid()")  # B's transaction holds a server connection
                (second,) = a.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
                b.rollback()
        if first != second:
            raise StoreTerminalError(
                f"{self.display_url} is reached through a connection pooler in transaction (or"
                f" statement) mode: one connection's statements ran in server sessions {first}"
                f" and {second}. The advisory locks that fence a window and mark a run alive,"
                " and the load's staging tables, need one server session per connection: use"
                " the pooler's session mode (PgBouncer pool_mode=session) or connect directly"
                " (docs/operations.md, High availability)"
            )

    def ensure_month(self, conn: psycopg.Connection, window: Window) -> None:
        """Create the month partition of ``window`` if it is missing, in its own short transaction
        before the window's: creating a partition locks the whole table, which must not be held
        for a window load. One function call (no DDL rights needed) when the month exists."""
        with conn.transaction():
            first_day = window.start.date().replace(day=1)
            conn.execute("SELECT competition_create_month(%s)", (first_day,))

    @contextmanager
    def session(self) -> Iterator[LoadSession]:
        """One connection with its staging tables, for loading any number of windows in turn."""
        with closing(self.connect()) as conn, self.wrap_errors("database error in"):
            with conn.transaction():
                for statement in SQL_STAGE:
                    conn.execute(statement)
            yield LoadSession(self, conn)

    @contextmanager
    def window_comparison(self, window: Window) -> Iterator[WindowComparison]:
        """A read-only comparison of the window (:meth:`WindowComparison.reconcile`), on its own
        connection, under the window's advisory lock, in a transaction always rolled back."""
        with closing(self.connect()) as conn, self.wrap_errors("database error in"):
            with conn.transaction() as transaction:
                lock_window(conn, window)
                yield WindowComparison(conn, window)
                raise psycopg.Rollback(transaction)

    def previous_loads(self, windows: Iterable[Window]) -> dict[Window, PreviousLoad]:
        """The latest committed load of each of ``windows`` that has one, with the window's
        stored counts now (one query; the counts use the ``window_start`` indexes)."""
        by_start = {w.start: w for w in windows}
        rows = self._read(
            f"SELECT w.window_start, w.extent, w.summary,"
            f" (SELECT count(*) FROM {FILL_EVENTS} e WHERE e.window_start = w.window_start"
            f"  AND e.fill_ts >= w.window_start AND e.fill_ts < w.window_start + interval '1h'),"
            f" (SELECT count(*) FROM {FILL_REJECTS} r WHERE r.window_start = w.window_start),"
            f" (SELECT count(*) FROM {FILL_CONFLICTS} c WHERE c.window_start = w.window_start)"
            f" FROM {FILL_WINDOWS} w WHERE w.window_start = ANY(%s)",
            list(by_start),
        )
        return {
            by_start[start]: PreviousLoad(
                extent, WindowSummary.from_json(summary), StoredCounts(*counts)
            )
            for start, extent, summary, *counts in rows
        }

    def retired_windows(self, windows: Iterable[Window] | None = None) -> set[Window]:
        """The windows retention took out (of ``windows``, or all): recorded again only by an
        explicit rebuild (``competition_fill_retired``)."""
        if windows is None:
            rows = self._read(f"SELECT window_start FROM {FILL_RETIRED}")
        else:
            starts = [w.start for w in windows]
            rows = self._read(
                f"SELECT window_start FROM {FILL_RETIRED} WHERE window_start = ANY(%s)", starts
            )
        return {Window(start) for (start,) in rows}

    def history_status(self, current_version: int, rebuilds: int = 10) -> dict[str, Any]:
        """Windows by recording version, the ranges recorded under another than
        ``current_version`` and the retired ranges (first, last, count), the latest rebuilds."""
        islands = (
            "SELECT min(s), max(s), count(*) FROM (SELECT s, s - row_number() OVER (ORDER BY s)"
            " * interval '1 hour' AS g FROM ({}) w(s)) x GROUP BY g ORDER BY 1"
        )
        by_version = self._read(
            f"SELECT coalesce(summary->>'version', 'none'), count(*) FROM {FILL_WINDOWS}"
            " GROUP BY 1 ORDER BY 1"
        )
        older = self._read(
            islands.format(
                f"SELECT window_start FROM {FILL_WINDOWS}"
                " WHERE (summary->>'version') IS DISTINCT FROM %s"
            ),
            str(current_version),
        )
        retired = self._read(islands.format(f"SELECT window_start FROM {FILL_RETIRED}"))
        latest = self._read(
            f"SELECT rebuild_id, kind, min(applied_at), count(*), max(reason), max(undone_by)"
            f" FROM {FILL_REBUILDS} GROUP BY rebuild_id, kind ORDER BY 3 DESC LIMIT %s",
            rebuilds,
        )

        def keys(rows: list[tuple]) -> list[tuple[str, str, int]]:
            return [(Window(a).key, Window(b).key, n) for a, b, n in rows]

        return {
            "windows_by_version": dict(by_version),
            "older": keys(older),
            "retired": keys(retired),
            "rebuilds": [dict(zip(_REBUILD_FIELDS, r, strict=True)) for r in latest],
        }

    def committed_positions(self) -> dict[Window, CommittedWindow]:
        """Every recorded window's committed offsets and stream position (one query): what the
        sensor compares with the journal or the stream to find the windows that are behind."""
        rows = self._read(
            f"SELECT window_start, summary->'positions', extent, recorded_at FROM {FILL_WINDOWS}"
        )
        return {
            Window(start): CommittedWindow(positions, extent, recorded_at.isoformat())
            for start, positions, extent, recorded_at in rows
        }

    def window_digest(self, window: Window) -> RowsDigest:
        """The digest of the rows stored for the window (one pass over its index range)."""
        ((count, hash_sum),) = self._read(SQL_STORED_DIGEST, window_params(window))
        return RowsDigest(count, int(hash_sum))

    def totals_mismatches(self, window: Window) -> list[tuple]:
        """The wallets whose stored totals for the window are not its rows' sums (empty when they
        agree; :data:`~competition_pipeline.store.totals.SQL_WINDOW_MISMATCHES`)."""
        return self._read(SQL_WINDOW_MISMATCHES, window_params(window))

    def recount_totals(self, window: Window) -> None:
        """Count the window's totals again from its rows, under its lock (a repair: rows changed
        outside the pipeline, by hand)."""
        with closing(self.connect()) as conn, self.wrap_errors("database error in"):
            with conn.transaction():
                lock_window(conn, window)
                for statement in SQL_RECOUNT_WINDOW:
                    conn.execute(statement, window_params(window))

    def window_conflicts(self, window: Window, limit: int = 1000) -> list[tuple]:
        """(source_file, line_no, trade_id, wallet, differing_fields) recorded for the window."""
        return self._read(
            f"SELECT source_file, line_no, trade_id, wallet, differing_fields FROM {FILL_CONFLICTS}"
            " WHERE window_start = %s ORDER BY source_file, line_no, wallet LIMIT %s",
            window.start,
            limit,
        )

    def window_rejects(self, window: Window, sample: int = 5) -> tuple[dict[str, int], list]:
        """Rejects of the window counted by kind (the reason up to its first colon), and samples."""
        by_kind = self._read(
            f"SELECT split_part(reason, ':', 1), count(*) FROM {FILL_REJECTS}"
            " WHERE window_start = %s GROUP BY 1 ORDER BY 2 DESC, 1",
            window.start,
        )
        samples = self._read(
            f"SELECT source_file, line_no, reason FROM {FILL_REJECTS} WHERE window_start = %s"
            " ORDER BY source_file, line_no LIMIT %s",
            window.start,
            sample,
        )
        return dict(by_kind), samples

    def window_rejects_not_stored(self, window: Window) -> int:
        """Rejects of the window counted but not stored (beyond the window's stored bound)."""
        rows = self._read(
            f"SELECT coalesce((summary->>'rejects_not_stored')::bigint, 0) FROM {FILL_WINDOWS}"
            " WHERE window_start = %s",
            window.start,
        )
        return int(rows[0][0]) if rows else 0

    def take_hour(
        self,
        window: Window,
        run_id: str,
        host: str | None = None,
        run_created: dt.datetime | None = None,
    ) -> Lease:
        """Take ``window``'s follower lease for ``run_id``, created at ``run_created`` (now when
        not given). The newer run wins: the generation is bumped and the run that held the hour
        has its next load refused. A run created before the holder's (a run marked dead whose
        step is retried, a stale request) does not take it: :class:`LeaseLost`."""
        with self.wrap_errors("cannot take the follower lease on"), self.connect() as conn:
            with conn.transaction():
                before = conn.execute(
                    f"SELECT run_id, generation FROM {FILL_FOLLOWERS} WHERE window_start = %s"
                    " FOR UPDATE",
                    (window.start,),
                ).fetchone()
                taken = conn.execute(
                    f"INSERT INTO {FILL_FOLLOWERS} AS f"
                    " (window_start, run_id, run_created_at, generation, host)"
                    " VALUES (%s, %s, coalesce(%s, now()), 1, %s)"
                    " ON CONFLICT (window_start) DO UPDATE SET run_id = EXCLUDED.run_id,"
                    " run_created_at = EXCLUDED.run_created_at, generation = f.generation + 1,"
                    " host = EXCLUDED.host, taken_at = now(), heartbeat_at = now(),"
                    " released_at = NULL, released_why = NULL"
                    " WHERE f.run_id IS NULL OR f.run_id = EXCLUDED.run_id"
                    " OR f.run_created_at IS NULL OR f.run_created_at <= EXCLUDED.run_created_at"
                    " RETURNING generation",
                    (window.start, run_id, run_created, host),
                ).fetchone()
        if taken is None:
            assert before is not None
            raise LeaseLost(
                f"{window.key}: run {run_id} is older than run {before[0]}, which holds the hour"
                f" (generation {before[1]})"
            )
        previous = before[0] if before is not None and before[0] != run_id else None
        return Lease(window, run_id, taken[0], previous)

    def hand_back(self, lease: Lease, why: str) -> bool:
        """Hand the hour back (its next follower takes it at once); False when the lease was
        no longer this run's."""
        with self.wrap_errors("cannot hand back the follower lease on"), self.connect() as conn:
            released = conn.execute(
                f"UPDATE {FILL_FOLLOWERS} SET run_id = NULL, released_at = now(),"
                " released_why = %s WHERE window_start = %s AND run_id = %s AND generation = %s",
                (why[:500], lease.window.start, lease.run_id, lease.generation),
            ).rowcount
        return released == 1

    def hour_holders(self) -> dict[Window, tuple[str, int]]:
        """The hours a follower holds now: run id and generation."""
        rows = self._read(
            f"SELECT window_start, run_id, generation FROM {FILL_FOLLOWERS}"
            " WHERE run_id IS NOT NULL"
        )
        return {Window(start): (run_id, generation) for start, run_id, generation in rows}

    @contextmanager
    def holding_run_lock(self, run_id: str) -> Iterator[None]:
        """Hold ``run_id``'s liveness lock while the block runs, on a connection of its own: a
        run that holds it is alive; a dead worker's lock is gone with its connection."""
        with closing(self.connect()) as conn, self.wrap_errors("database error in"):
            conn.autocommit = True
            conn.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s) & 2147483647)",
                (_RUN_LOCK_NAMESPACE, run_id),
            )
            yield

    def runs_holding_lock(self, run_ids: Iterable[str]) -> set[str]:
        """Which of ``run_ids`` have a live worker holding their liveness lock (pg_locks only:
        nothing is locked by asking)."""
        rows = self._read(
            "SELECT r FROM unnest(%s::text[]) r WHERE EXISTS ("
            " SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = %s AND l.objid = (hashtext(r) & 2147483647)::oid"
            " AND l.objsubid = 2)",
            list(run_ids),
            _RUN_LOCK_NAMESPACE,
        )
        return {run_id for (run_id,) in rows}

    @contextmanager
    def shared_connection(self) -> Iterator[None]:
        """Reads inside share one connection (opened by the first of them) instead of one each:
        a backfill's per-window checks, where a new connection costs more than a small window's
        queries."""
        self._sharing = True
        try:
            yield
        finally:
            shared, self._shared, self._sharing = self._shared, None, False
            if shared is not None:
                shared.close()

    def _read(self, statement: str, *params: object) -> list[tuple]:
        bound = params[0] if len(params) == 1 and isinstance(params[0], dict) else params
        with self.wrap_errors("query failed on"):
            if self._sharing:
                if self._shared is None or self._shared.closed:
                    self._shared = self.connect()
                    self._shared.autocommit = True  # one round trip a read, no BEGIN/COMMIT
                return self._shared.execute(statement, bound).fetchall()  # type: ignore[arg-type]
            with self.connect() as conn:
                return conn.execute(statement, bound).fetchall()  # type: ignore[arg-type]
