"""The live fill stream: NATS JetStream ``ENGINE_FILLS`` (contract, section 4), replayed per window.

A window is read with an ordered, ephemeral consumer that starts at the window's start time
(publish time is never earlier than a fill's timestamp), and stops once the stream has passed
the window's end plus the allowed lateness (default 5 minutes): a message published after it
whose fill is after it too, or the last message that existed when the read began. Fills whose
``timestamp`` lies in the window are kept; a message without a readable fill timestamp (another
type, or a line to reject) belongs to the window of its publish time, so it is counted or
quarantined exactly once. Record ids are stream sequences; a message delivered twice is passed
on once (and the loader is idempotent anyway).

A window's committed position (``stats.positions``, committed with its rows) is the last stream
sequence its loads considered, and whether the stream had passed the window for good there. Every
message up to it was read and placed, so a later load (the open hour's follower, every second)
reads from the next sequence on: only what was published since, nothing missing or twice.

Runs its own asyncio loop, so the synchronous pipeline (and its prefetch thread) can use it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import msgspec
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from competition_pipeline.fills.source import RawBatch, ReadStats, SourceError, bounded
from competition_pipeline.fills.windows import Window
from competition_pipeline.redaction import url as redacted_url

STREAM = "ENGINE_FILLS"
SUBJECT_PREFIX = "engine.fills"
DEFAULT_LATENESS_MS = 5 * 60 * 1000
BATCH = 5_000


class _Head(msgspec.Struct):
    """Just enough of a message to place it in a window, or to publish it under its subject."""

    fill: dict | None = None


_HEAD = msgspec.json.Decoder(_Head)


def fill_head(data: bytes) -> dict:
    """The message's ``fill`` object, or an empty one when it has none or when the line
    is not readable (the pipeline rejects such a line; placing and publishing it go on)."""
    try:
        return _HEAD.decode(data).fill or {}
    except Exception:  # noqa: BLE001 (msgspec raises several types for a line that is not JSON)
        return {}


def fill_timestamp(data: bytes) -> int | None:
    """The message's fill timestamp in ms, or None when it has none (or is not readable)."""
    value = fill_head(data).get("timestamp")
    return value if type(value) is int else None


@dataclass(frozen=True)
class NatsAuth:
    """How to authenticate to NATS, NATS's own ways: a credentials file (``NATS_CREDS``: a user
    JWT and its NKey seed), user and password (``NATS_USER``, ``NATS_PASSWORD``, or in the URL's
    userinfo), a token (``NATS_TOKEN``); TLS with a CA and a client certificate (``NATS_TLS_CA``,
    ``NATS_TLS_CERT``, ``NATS_TLS_KEY``, or a ``tls://`` URL). The secrets never appear in its
    repr, and no message shows them."""

    creds_file: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> NatsAuth:
        """For the tools that publish (``publish``, the local start): the same variables the
        code location's resource reads."""
        get = lambda name: env.get(name) or None  # noqa: E731
        return cls(
            get("NATS_CREDS"),
            get("NATS_USER"),
            get("NATS_PASSWORD"),
            get("NATS_TOKEN"),
            get("NATS_TLS_CA"),
            get("NATS_TLS_CERT"),
            get("NATS_TLS_KEY"),
        )

    def options(self, url: str) -> dict:
        """``nats.connect`` keyword arguments."""
        out: dict = {}
        if self.creds_file:
            out["user_credentials"] = self.creds_file
        if self.user:
            out["user"] = self.user
        if self.password:
            out["password"] = self.password
        if self.token:
            out["token"] = self.token
        if self.tls_ca_file or self.tls_cert_file or url.startswith("tls://"):
            context = ssl.create_default_context(cafile=self.tls_ca_file)
            if self.tls_cert_file:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
            out["tls"] = context
        return out


@dataclass(frozen=True)
class StreamState:
    messages: int
    first_seq: int
    last_seq: int
    first_time: dt.datetime | None
    last_time: dt.datetime | None


class StreamSource:
    """Reads windows from a JetStream stream (``FILL_SOURCE=nats``)."""

    files_by_window = False

    def __init__(
        self,
        url: str,
        *,
        stream: str = STREAM,
        subject_prefix: str = SUBJECT_PREFIX,
        lateness_ms: int = DEFAULT_LATENESS_MS,
        timeout: float = 5.0,
        auth: NatsAuth | None = None,
    ) -> None:
        self.url = url
        self.auth = auth or NatsAuth()
        self.stream = stream
        self.subjects = f"{subject_prefix}.>"
        self.lateness_ms = lateness_ms
        self.timeout = timeout

    @property
    def origin(self) -> str:
        return f"nats:{self.stream}"

    def describe(self) -> str:
        return f"nats stream {self.stream} at {redacted_url(self.url)}"

    def has_data(self, window: Window) -> None:
        return None

    def unchanged(self, window: Window, since: Mapping[str, dict]) -> bool:
        """Whether the stream holds no message after the window's committed position (told by
        the stream's last sequence: one request, no replay)."""
        position = since.get(self.origin)
        if position is None:
            return False

        async def newest(nc) -> int:
            return (await self.read_state(nc)).last_seq

        return _run(self._with_connection(newest)) <= position["seq"]

    def holds(self, window: Window, since: Mapping[str, dict]) -> bool:
        """False: the stream has no offsets to check (reconciliations compare row by row)."""
        return False

    # -- connection -------------------------------------------------------------------------

    async def _connect(self):
        try:
            return await connect(self.url, self.timeout, self.auth)
        except Exception as exc:  # noqa: BLE001 (nats-py raises several unrelated types)
            raise SourceError(
                f"cannot reach the fill stream at {redacted_url(self.url)}: "
                f"{type(exc).__name__}: {str(exc) or f'no answer within {self.timeout:g} s'}"
            ) from None

    async def read_state(self, nc) -> StreamState:
        """The stream's extent on connection ``nc``: message count, sequences and times."""
        try:
            info = await nc.jetstream().stream_info(self.stream)
        except NotFoundError:
            raise SourceError(f"stream {self.stream} does not exist", retryable=True) from None
        state = info.state
        first_time = last_time = None
        if state.messages:
            # nats-py's StreamState has no times: read them off the first and last messages.
            js = nc.jetstream()
            first_time = _when((await js.get_msg(self.stream, seq=state.first_seq)).time)
            last_time = _when((await js.get_msg(self.stream, seq=state.last_seq)).time)
        return StreamState(state.messages, state.first_seq, state.last_seq, first_time, last_time)

    async def _with_connection(self, action):
        nc = await self._connect()
        try:
            return await action(nc)
        finally:
            await nc.close()

    def window_complete(self, window: Window, state: StreamState) -> bool:
        """The stream has passed the window's end plus the allowed lateness."""
        if state.last_time is None:
            return False
        horizon = window.end + dt.timedelta(milliseconds=self.lateness_ms)
        return state.last_time >= horizon

    # -- reading ------------------------------------------------------------------------------

    def read_window(
        self,
        window: Window,
        stats: ReadStats,
        extent: Mapping[str, int] | None = None,
        since: Mapping[str, dict] | None = None,
    ) -> Iterator[RawBatch]:
        """The window replayed from its start time, or with ``since`` (its committed position)
        only the messages published after that position."""
        position = (since or {}).get(self.origin)
        loop = asyncio.new_event_loop()
        try:
            nc = loop.run_until_complete(self._connect())
            try:
                state = loop.run_until_complete(self.read_state(nc))
                stop_seq = state.last_seq if extent is None else extent.get(self.origin, 0)
                stats.segments = 1
                last_seq, past = 0, False
                if position is not None:
                    self._check_resume(window, state, position["seq"])
                    stats.incremental = True
                    last_seq, past = position["seq"], bool(position.get("past"))
                else:
                    self._check_retention(window, state)
                if state.messages and stop_seq >= state.first_seq and not past:
                    start = last_seq + 1 if position is not None else None
                    sub = loop.run_until_complete(self._subscribe(nc, window, start))
                    try:
                        while last_seq < stop_seq:
                            records, last_seq, done, past = loop.run_until_complete(
                                self._next_batch(sub, window, last_seq, stop_seq, stats)
                            )
                            if records:
                                yield RawBatch(self.origin, records)
                            if done:
                                break
                    finally:
                        loop.run_until_complete(sub.unsubscribe())
                reached = max(last_seq, min(stop_seq, state.last_seq))
                stats.extent[self.origin] = reached
                # Resume past what was read: everything up to ``reached`` unless the read ended
                # waiting (then from the last message it got; reading one twice is harmless).
                # Past the window for good, nothing later is read for it (as a replay stops).
                read_all = past or last_seq >= min(stop_seq, state.last_seq)
                stats.positions[self.origin] = {
                    "seq": reached if read_all else last_seq,
                    "past": past,
                }
                stats.complete = past or self.window_complete(window, state)
            finally:
                loop.run_until_complete(nc.close())
        finally:
            loop.close()

    def _check_retention(self, window: Window, state: StreamState) -> None:
        if state.first_seq > 1 and state.first_time is not None and window.start < state.first_time:
            raise SourceError(
                f"window {window.key} starts before the oldest message the stream {self.stream} "
                f"still retains ({state.first_time.isoformat()}): replay it from the journal "
                "(FILL_SOURCE=journal)",
                retryable=False,
            )

    def _check_resume(self, window: Window, state: StreamState, seq: int) -> None:
        if state.messages and state.first_seq > seq + 1:
            raise SourceError(
                f"window {window.key} was committed up to stream sequence {seq}, but the stream "
                f"{self.stream} now begins at {state.first_seq} (messages after it were removed "
                "before they were read): replay it from the journal (FILL_SOURCE=journal)",
                retryable=False,
            )

    async def _subscribe(self, nc, window: Window, start_seq: int | None = None):
        """An ordered consumer from the window's start time, or from ``start_seq``."""
        if start_seq is None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=window.start.isoformat()
            )
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq
            )
        return await nc.jetstream().subscribe(
            self.subjects, stream=self.stream, ordered_consumer=True, config=config
        )

    async def _next_batch(self, sub, window: Window, last_seq: int, stop_seq: int, stats):
        records: list[tuple[int, bytes]] = []
        end_ms = window.end_ms + self.lateness_ms
        while len(records) < BATCH:
            msg = await _next_new(sub, last_seq, self.timeout)
            if msg is None:
                return records, last_seq, True, False  # nothing more to read now
            last_seq = msg.metadata.sequence.stream
            stats.bytes_read += len(msg.data)
            placed, timestamp, published_ms = _placement(msg)
            if window.start_ms <= placed < window.end_ms:
                records.append((last_seq, bounded(msg.data)))
            # Past the window for good: published after its end plus the lateness, and a fill
            # of that time too (a journal re-published later has late publish times throughout).
            past = published_ms >= end_ms and timestamp is not None and timestamp >= end_ms
            if last_seq >= stop_seq or past:
                return records, last_seq, True, past
        return records, last_seq, False, False


async def _quiet(_error: Exception) -> None:
    """nats-py logs every failed attempt; the caller reports the failure once."""


async def connect(url: str, timeout: float, auth: NatsAuth | None = None):
    """One connection attempt, bounded in time (nats-py can otherwise wait forever), with
    ``auth`` (default: none beyond the URL's userinfo)."""
    return await asyncio.wait_for(
        nats.connect(
            url,
            connect_timeout=timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=_quiet,
            **(auth or NatsAuth()).options(url),
        ),
        timeout=timeout + 1,
    )


def windows_since(source: StreamSource, after_seq: int) -> tuple[dict[Window, int], int]:
    """The windows of the messages after stream sequence ``after_seq``, each with the newest
    sequence seen for it, and the last sequence read (the sensor's scan position). Reads up to
    the last message that exists when it starts."""

    async def read(nc) -> tuple[dict[Window, int], int]:
        state = await source.read_state(nc)
        if state.last_seq <= after_seq:
            return {}, after_seq
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(after_seq + 1, 1)
        )
        sub = await nc.jetstream().subscribe(
            source.subjects, stream=source.stream, ordered_consumer=True, config=config
        )
        windows: dict[Window, int] = {}
        last = after_seq
        try:
            while last < state.last_seq:
                msg = await _next_new(sub, last, source.timeout)
                if msg is None:
                    break
                last = msg.metadata.sequence.stream
                placed, _, _ = _placement(msg)
                windows[Window.containing_ms(placed)] = last
        finally:
            await sub.unsubscribe()
        return windows, last

    return _run(source._with_connection(read))


async def _next_new(sub, after_seq: int, timeout: float):
    """The next message past stream sequence ``after_seq``, or None when none arrives within
    ``timeout``: the ordered consumer delivers messages again after it resets on a gap."""
    while True:
        try:
            msg = await sub.next_msg(timeout=timeout)
        except TimeoutError:
            return None
        if msg.metadata.sequence.stream > after_seq:
            return msg


def _placement(msg) -> tuple[int, int | None, int]:
    """Where a message is placed: its fill timestamp, or its publish time when it has none (in
    ms); and the two times it was placed by (the fill timestamp None when it has none)."""
    timestamp = fill_timestamp(msg.data)
    published_ms = int(msg.metadata.timestamp.timestamp() * 1000)
    return (timestamp if timestamp is not None else published_ms), timestamp, published_ms


def _when(value) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value).replace("Z", "+00:00")
    if "." in text:  # nanoseconds: keep microseconds
        head, tail = text.split(".", 1)
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    return dt.datetime.fromisoformat(text)


def _run(coroutine):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()
