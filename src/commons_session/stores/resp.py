"""A lean asyncio client for one standalone Redis server: every command of the process goes over
ONE connection, pipelined, as node-redis does.

Why not redis-py on the hot path: its call costs the client 90-150 µs of CPU (a blocking pool
checkout, an asyncio timeout task per command, a pure-Python RESP3 parser), more than Redis spends
answering (docs/performance.md). Here a command is packed and parsed by hiredis (C), written at
once, and its future appended to a FIFO; replies resolve the futures in order. Measured
(bench/redis_client.py, 64 concurrent calls): session get 75 → 16 µs of client CPU, create 247 →
39; end to end, an HTTP read on Redis 3,300 → 6,500 to 7,100 req/s. redis-py stays for Cluster, TLS
and URLs with options.

- **Bounds**: every command must be answered within ``timeout`` seconds. One timer per connection
  watches the oldest pending command (replies come in order, so it is the first to expire); when
  it expires, the connection is torn down, because after a lost reply the FIFO can no longer be
  trusted. Every pending command then fails with ``StoreUnavailable`` and the next command
  reconnects. (A ``call_at`` handle per command, cancelled on its reply, measured ~3 µs more per
  command than this one timer; redis-py's timeout task per command costs more still.)
- **No retries**: a command whose connection fails is not sent again: a script that counts or
  claims may have run before its reply was lost.
- **Failures**: refused, reset or closed connections and timeouts raise ``StoreUnavailable``;
  replies that mean "not now" (``LOADING``, ``READONLY``, ``MASTERDOWN``, ``TRYAGAIN``) too.
  Any other error reply (``WRONGTYPE``, a script error) raises ``ReplyError``.
- **URL**: ``redis://[[user]:password@]host[:port][/db]``: AUTH and SELECT are pipelined ahead of
  the first command of each connection (RESP2, no HELLO). TLS (``rediss://``), Cluster and URLs
  with options in a query string stay on redis-py (``stores/redis.py`` chooses); ``lean_url``
  says which URLs this client takes.
- **Loops**: the connection opens lazily in the running loop on first use (a store is built
  before the server's loop runs), and a command in another loop opens one of its own; close the
  client in each loop that used it (as ``asyncio.run`` per CLI command does with the stores).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from ..errors import StoreUnavailable

__all__ = ["Arg", "LeanRedis", "ReplyError", "Script", "lean_url"]

Arg = str | bytes | int | float

#: hiredis' packer (C); its stub types the argument as a 1-tuple.
_pack: Callable[[tuple[Arg, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]

#: Error replies that say the server cannot serve now (redis-py raises connection-type errors for
#: them too); a retry later may succeed, so they are a 503, not a bug.
_UNAVAILABLE_REPLIES = ("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN")


class ReplyError(Exception):
    """An error reply from Redis (``WRONGTYPE ...``, ``NOSCRIPT ...``, ``ERR ...``)."""

    @property
    def code(self) -> str:
        return str(self).split(" ", 1)[0]


def _failure(reply: ReplyError) -> Exception:
    if reply.code in _UNAVAILABLE_REPLIES:
        return StoreUnavailable(f"Redis: {reply}")
    return reply


@dataclass(frozen=True)
class Script:
    """A Lua script, run by its SHA1 (``EVALSHA``) and sent whole only when Redis lacks it."""

    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest())


def lean_url(url: str) -> bool:
    """True for the URLs this client handles: plain ``redis://`` with no query options."""
    parts = urlsplit(url)
    return parts.scheme == "redis" and not parts.query


class _Call:
    """One pending request in the FIFO: a command (``count`` 1) or a pipeline of ``count``."""

    __slots__ = ("count", "deadline", "future", "replies")

    def __init__(self, future: asyncio.Future[Any] | None, deadline: float, count: int) -> None:
        self.future = future  # None: a handshake command, whose error reply ends the connection
        self.deadline = deadline
        self.count = count
        self.replies: list[Any] | None = [] if count > 1 else None


class _Connection(asyncio.Protocol):
    """One socket to Redis and the FIFO of requests written to it and not yet answered."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.closed = False
        self.why = ""  # why it closed
        self.lost: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._pending: deque[_Call] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._unsent: list[bytes] = []  # requests sent in this turn of the loop, written at its end

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self._pending
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError:
                self.abort("Redis sent a malformed reply")
                return
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: nothing after it can be trusted
                self.abort("Redis sent a reply nobody asked for")
                return
            call = pending[0]
            replies = call.replies
            if replies is not None:
                replies.append(reply)
                if len(replies) < call.count:
                    continue
                reply = replies
            pending.popleft()
            future = call.future
            if future is None:
                if isinstance(reply, ReplyError):  # AUTH or SELECT refused
                    self.abort(f"Redis refused the connection: {reply}")
                    return
            elif not future.done():  # done: its caller was cancelled; the reply is dropped
                if isinstance(reply, ReplyError):
                    future.set_exception(_failure(reply))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("the connection to Redis was closed" if exc is None else f"Redis connection lost: {exc}")
        if not self.lost.done():
            self.lost.set_result(None)

    # -- requests ------------------------------------------------------------------------------

    def send(self, data: bytes, count: int = 1, *, handshake: bool = False) -> asyncio.Future[Any]:
        """Write ``count`` packed commands at once; the future gets the reply (a list of
        ``count`` replies when ``count`` > 1)."""
        if self.closed:  # e.g. AUTH was refused between the connect and this caller's turn
            raise StoreUnavailable(self.why)
        future = None if handshake else self.loop.create_future()
        deadline = self.loop.time() + self.timeout
        idle = not self._pending
        self._pending.append(_Call(future, deadline, count))
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._check_deadline)
        if idle:  # nothing in flight: write now, a lone client waits for nobody
            assert self._transport is not None
            self._transport.write(data)
        else:
            # Under load, written once at the end of this turn of the loop, however many tasks
            # sent in it: one system call for a burst instead of one each (the socket write was
            # the Redis read's largest self-time). Order is kept: FIFO and buffer grow together.
            self._unsent.append(data)
            if len(self._unsent) == 1:
                self.loop.call_soon(self._flush)
        return future  # type: ignore[return-value]  # None only for the handshake

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if unsent and not self.closed:
            assert self._transport is not None
            self._transport.write(b"".join(unsent))

    def _check_deadline(self) -> None:
        """The one timer: fires at the oldest pending request's deadline."""
        self._timer = None
        if not self._pending:
            return
        deadline = self._pending[0].deadline
        if deadline <= self.loop.time():
            self.abort(f"Redis did not answer within {self.timeout:g} s")
        else:
            self._timer = self.loop.call_at(deadline, self._check_deadline)

    def abort(self, why: str) -> None:
        """Tear the connection down now; every pending request fails with ``StoreUnavailable``."""
        self._fail(why)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    def _fail(self, why: str) -> None:
        if not self.closed:
            self.closed, self.why = True, why
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unsent = []
        pending, self._pending = self._pending, deque()
        for call in pending:
            if call.future is not None and not call.future.done():
                call.future.set_exception(StoreUnavailable(why))


class LeanRedis:
    """Commands, pipelines and scripts over one pipelined connection (see the module docstring)."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if not lean_url(url):
            raise ValueError(f"LeanRedis takes redis://host:port/db URLs without options, not {url!r}")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        self.timeout = timeout
        path = parts.path.strip("/")
        self.db = int(path) if path else 0
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        handshake: list[tuple[Arg, ...]] = []
        if password is not None:
            handshake.append(("AUTH", username, password) if username else ("AUTH", password))
        if self.db:
            handshake.append(("SELECT", self.db))
        self._handshake = b"".join(_pack(c) for c in handshake)
        self._handshake_count = len(handshake)
        self._conn: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None

    async def _connection(self) -> _Connection:
        """The open connection of the running loop, opened if there is none: once, in a task of
        its own, for every caller waiting (a cancelled caller does not cancel it for the rest)."""
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is not None and not conn.closed and conn.loop is loop:
            return conn
        opening = self._opening
        if opening is None or opening.get_loop() is not loop:
            opening = self._opening = loop.create_task(self._open(loop))
            opening.add_done_callback(self._opened)
        return await asyncio.shield(opening)

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        if self._opening is task:
            self._opening = None
        if not task.cancelled():
            task.exception()  # marked retrieved: every waiter raises it on its own

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        stale = self._conn
        if stale is not None and stale.loop is not loop:
            self._conn = None  # its loop is another's (or closed): never touch its transport
        timeout = self.timeout
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, timeout), self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to Redis at {self.host}:{self.port}: {exc}") from exc
        if self._handshake_count:
            # Pipelined ahead of the commands waiting for this connection; a refusal ends it.
            conn.send(self._handshake, self._handshake_count, handshake=True)
        self._conn = conn
        return conn

    async def execute(self, *args: Arg) -> Any:
        """One command; its reply (bytes, int, None or a list of them)."""
        conn = self._conn
        if conn is None or conn.closed or conn.loop is not asyncio.get_running_loop():
            conn = await self._connection()
        return await conn.send(_pack(args))

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands in one write and one round trip (not a transaction); their replies in
        order. An error reply raises (the first one) once every reply is in."""
        if len(commands) < 2:
            return [await self.execute(*c) for c in commands]
        data = b"".join(_pack(tuple(c)) for c in commands)
        conn = await self._connection()
        replies: list[Any] = await conn.send(data, len(commands))
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise _failure(reply)
        return replies

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """``EVALSHA``, and ``EVAL`` if Redis does not know the script (a restart forgets them)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
        return await self.execute("EVAL", script.text, len(keys), *keys, *args)

    async def close(self) -> None:
        """Drop the connection (pending commands fail). A later command opens a new one."""
        loop = asyncio.get_running_loop()
        opening = self._opening
        if opening is not None and opening.get_loop() is loop:  # else it would outlive the close
            with contextlib.suppress(Exception):
                await asyncio.shield(opening)
        conn, self._conn = self._conn, None
        if conn is not None and conn.loop is loop:
            conn.abort("the Redis client was closed")
            await conn.lost
