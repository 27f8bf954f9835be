"""A lean RESP2 connection for the two hot paths: blocking stream reads and batched writes.

Why not redis-py here: every dispatch is a task ``XADD``, a worker's ``XREADGROUP``, its settle
pipeline and the caller's ``XREAD``, and redis-py's asyncio client spends several times the CPU
of the command itself on each (a connection pool, retry and observability wrappers, a stream
reader with a timeout context per read). ``benchmarks/bench_dispatch.py`` measures it in one
run: the same hops through redis-py cost about three times the CPU per dispatch of the same hops
through an ``asyncio.Protocol`` that hands hiredis-parsed replies straight to their futures.
This module is that protocol, hardened for use: authentication and database selection from the
URL, connection loss failing every pending reply with redis-py's ``ConnectionError`` (so the
outage handling of the callers is unchanged), server errors raised as redis-py's exception
classes, and the replies of a redis-py pipeline passed through redis-py's own response callbacks,
so callers see exactly what redis-py would have returned. Everything else (cluster routing,
TLS, scripts, transactions) stays with redis-py; see :class:`~nervenet.transport.RedisTransport`
for when this is used.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis._parsers import BaseParser
from redis.asyncio.client import Pipeline
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT = 5.0  # seconds, as the redis-py clients of the transport
#: How much longer than its BLOCK a blocking read may take before its connection counts as dead
#: (a peer gone without a reset, e.g. after a network partition, never answers).
READ_GRACE = 10.0

Command = Sequence[Any]


class _ReplyError(Exception):
    """What hiredis makes of an error reply; turned into redis-py's class by :func:`_error`."""


def _error(reply: _ReplyError) -> Exception:
    """redis-py's own mapping (its parsers share it), so classes and messages are the same:
    LOADING and the authentication errors are ConnectionErrors there, the rest ResponseErrors."""
    error: Exception = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error


class _Batch:
    """The replies one ``send`` waits for: resolved once all of them are in, in one go (a
    future per command and a gather over them cost more than the commands, at 1,000 in flight)."""

    __slots__ = ("future", "replies", "size")

    def __init__(self, future: asyncio.Future[list[Any]], size: int) -> None:
        self.future, self.size = future, size
        self.replies: list[Any] = []


class RespConnection(asyncio.Protocol):
    """One connection: commands written in one ``write`` per batch, replies resolved in order."""

    def __init__(self) -> None:
        self._parser = hiredis.Reader(replyError=_ReplyError)
        self._pending: deque[_Batch] = deque()
        self._transport: asyncio.Transport | None = None
        self._lost: Exception | None = None

    @property
    def usable(self) -> bool:
        transport = self._transport
        return transport is not None and not transport.is_closing() and self._lost is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        while (reply := self._parser.gets()) is not False:
            batch = self._pending[0]
            batch.replies.append(_error(reply) if isinstance(reply, _ReplyError) else reply)
            if len(batch.replies) == batch.size:
                self._pending.popleft()
                if not batch.future.done():  # its caller was cancelled: the replies are dropped
                    batch.future.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:  # else aborted, for a reason of its own
            self._lost = RedisConnectionError(f"connection to Redis lost ({exc or 'closed'})")
        self._fail_pending(self._lost)

    def _fail_pending(self, error: Exception) -> None:
        while self._pending:
            batch = self._pending.popleft()
            if not batch.future.done():
                batch.future.set_exception(error)

    def send(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """Write ``commands`` at once; the future resolves to their replies, in order (an error
        reply as its redis-py exception, not raised)."""
        if not self.usable or self._transport is None:
            raise self._lost or RedisConnectionError("connection to Redis is closed")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if not commands:
            future.set_result([])
            return future
        self._pending.append(_Batch(future, len(commands)))
        self._transport.write(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        return future

    async def call(self, *command: Any) -> Any:
        """One command's reply; an error reply is raised."""
        [reply] = await self.send([command])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self, error: Exception) -> None:
        """Fail every pending reply with ``error`` and drop the connection (it is dead)."""
        self._lost = error
        self._fail_pending(error)
        if self._transport is not None:
            self._transport.abort()


class RespEndpoint:
    """Where and how to connect: ``redis-py``'s ``parse_url`` keywords of a ``redis://`` or
    ``unix://`` URL (host and port or path, username, password, db)."""

    def __init__(self, connect_kwargs: dict[str, Any]) -> None:
        self._kwargs = connect_kwargs

    async def connect(self) -> RespConnection:
        loop = asyncio.get_running_loop()
        kwargs = self._kwargs
        try:
            if "path" in kwargs:
                opening = loop.create_unix_connection(RespConnection, kwargs["path"])
            else:
                opening = loop.create_connection(
                    RespConnection, kwargs.get("host", "localhost"), kwargs.get("port", 6379)
                )
            _, connection = await asyncio.wait_for(opening, CONNECT_TIMEOUT)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"timed out connecting to Redis ({exc})") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis ({exc})") from exc
        try:
            await self._handshake(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _handshake(self, connection: RespConnection) -> None:
        password, username = self._kwargs.get("password"), self._kwargs.get("username")
        if password is not None:
            await connection.call("AUTH", *([username] if username else []), password)
        if self._kwargs.get("db"):
            await connection.call("SELECT", self._kwargs["db"])


class RespPipelines:
    """Runs redis-py pipelines over one lean connection, reopened when it broke.

    Only the I/O changes: commands are those the pipeline queued, encoded as redis-py encodes
    them, and each reply goes through the pipeline's own response callback, so the results
    (``raise_on_error=False``: an error reply in its command's place) are redis-py's.
    """

    def __init__(self, endpoint: RespEndpoint, encode: Callable[[Any], Any]) -> None:
        self._endpoint = endpoint
        self._encode = encode  # the client's: str, int and float become bytes as redis-py sends
        self._connection: RespConnection | None = None

    async def execute(self, pipe: Pipeline) -> list[Any]:
        stack: list[tuple[tuple[Any, ...], Any]] = list(pipe.command_stack)
        encode = self._encode
        commands = [_split_name(tuple(encode(arg) for arg in args)) for args, _ in stack]
        connection = await self._open()
        # Cancelled while waiting, the replies still come for a future nobody awaits: they are
        # read and dropped, so the connection stays in step and is kept.
        replies = await connection.send(commands)
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                raise reply  # LOADING, NOAUTH: redis-py raises these from a pipeline too
        return [
            _parse(pipe, args, options, reply)
            for (args, options), reply in zip(stack, replies, strict=True)
        ]

    async def _open(self) -> RespConnection:
        if self._connection is None or not self._connection.usable:
            self._connection = await self._endpoint.connect()
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class RespReaders:
    """Connections for blocking reads: one per read in progress, kept for the next read.

    A blocked ``XREAD(GROUP)`` holds its connection until the server answers, so concurrent
    reads each need their own; a read cancelled while blocked closes its connection (the
    server's late answer must not reach the next read). The server answers a read within its
    ``BLOCK``; one still unanswered :data:`READ_GRACE` later is on a dead connection: a watchdog
    (one task, a look every ``READ_GRACE / 2``; a timer per read cost a busy coordinator 4% of
    its CPU) aborts it, and the read fails with redis-py's ``TimeoutError``, an outage the
    callers ride out.
    """

    def __init__(self, endpoint: RespEndpoint) -> None:
        self._endpoint = endpoint
        self._idle: list[RespConnection] = []
        self._busy: dict[RespConnection, float] = {}  # connection -> monotonic answer deadline
        self._watchdog: asyncio.Task[None] | None = None

    async def call(self, *command: Any, block_ms: int | None = None) -> Any:
        """``command``'s reply; ``block_ms``: the ``BLOCK`` it carries (none: answered at once)."""
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._abort_overdue())
        connection = self._idle.pop() if self._idle else await self._endpoint.connect()
        self._busy[connection] = time.monotonic() + (block_ms or 0) / 1000 + READ_GRACE
        try:
            reply = await connection.call(*command)
        except BaseException as exc:
            self._busy.pop(connection, None)
            if isinstance(exc, Exception) and connection.usable:
                self._idle.append(connection)  # an error reply leaves the connection in step
            else:
                connection.close()  # cancelled while blocked (or lost)
            raise
        self._busy.pop(connection, None)
        if connection.usable:
            self._idle.append(connection)
        return reply

    async def _abort_overdue(self) -> None:
        while True:
            await asyncio.sleep(READ_GRACE / 2)
            now = time.monotonic()
            for connection, deadline in list(self._busy.items()):
                if now > deadline:
                    connection.abort(
                        RedisTimeoutError(
                            f"Redis did not answer a read {READ_GRACE:g} s past its BLOCK; "
                            "reconnecting"
                        )
                    )

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for connection in (*self._idle, *self._busy):
            connection.close()
        self._idle.clear()
        self._busy.clear()


def stream_batch(reply: Any) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]]:
    """An ``XREAD``/``XREADGROUP`` reply in redis-py's shape: ``[(stream, [(id, fields)])]``,
    fields ``None`` for an entry deleted while pending."""
    if not reply:
        return []
    return [
        (
            stream,
            [
                (entry_id, None if flat is None else dict(zip(flat[::2], flat[1::2], strict=True)))
                for entry_id, flat in entries
            ],
        )
        for stream, entries in reply
    ]


def _split_name(command: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """redis-py queues some commands under a two-word name (``XINFO GROUPS``)."""
    if b" " in command[0]:
        return (*command[0].split(), *command[1:])
    return command


def _parse(pipe: Pipeline, args: tuple[Any, ...], options: Any, reply: Any) -> Any:
    """What redis-py's ``parse_response`` makes of ``reply`` (less the connection read)."""
    if isinstance(reply, ResponseError):
        return options.get(EMPTY_RESPONSE, reply)
    options = {k: v for k, v in options.items() if k not in (EMPTY_RESPONSE, NEVER_DECODE, "keys")}
    callback = pipe.response_callbacks.get(args[0])
    return reply if callback is None else callback(reply, **options)
