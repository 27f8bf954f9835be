"""The floors under a dispatch's round trip: the same Redis hops as nervenet, and nothing else.

A dispatch through Redis Streams takes, at the least, what nervenet's takes: the caller's
``XADD`` of the task, the worker's ``XREADGROUP BLOCK`` that returns it, the worker's settle
pipeline (cache ``SET``, reply ``XADD``, ``XACK``, ``XDEL``) and the caller's ``XREAD BLOCK`` of
the reply stream. This module does exactly that (no envelope, no validation, no retries, no
registry, no heartbeats) over two clients, so ``bench_dispatch.py`` can split a round trip into
nervenet's code, the client library's, and the hops themselves:

* ``redis-py``: redis-py's asyncio client with hiredis, as nervenet uses it;
* ``protocol``: an ``asyncio.Protocol`` that writes commands packed by hiredis and resolves each
  reply's future as hiredis parses it: about the least Python a round trip can run.

Nothing here is fit for production use (no reconnects, no auth, no cluster). Run as a script, it
is the worker of one of them:  ``python bare_streams.py REDIS_URL redis-py|protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import Sequence
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis

GROUP = "bare"
READ_COUNT = 1000
BLOCK_MS = 1000
MAXLEN = 10_000
CLIENTS = ("redis-py", "protocol")

Entries = list[tuple[bytes, dict[bytes, bytes]]]


class Client(Protocol):
    """The four things either side of a bare round trip asks of Redis."""

    async def xadd(self, stream: str, fields: dict[bytes, bytes]) -> None: ...

    async def read(self, stream: str, last: bytes, group: bool) -> Entries:
        """``XREADGROUP`` (``group``) or ``XREAD`` of ``stream`` after ``last``, blocking."""
        ...

    async def settle(
        self, tasks: str, replies: str, entry_id: bytes, task_id: bytes, body: bytes
    ) -> None:
        """Cache ``body`` as the result, send it as the reply, acknowledge and delete the entry."""
        ...

    async def create_group(self, stream: str) -> None: ...

    async def newest(self, stream: str) -> bytes:
        """The id of the stream's last entry (``0-0`` if none): where a reader starts."""
        ...

    async def aclose(self) -> None: ...


class RedisPyClient:
    """redis-py's asyncio client, one connection for commands and one for blocking reads."""

    def __init__(self, url: str) -> None:
        # As nervenet's transport: a burst of commands waits for one of 64 connections.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=None)
        self._commands = aioredis.Redis(connection_pool=pool)
        self._reader = aioredis.Redis.from_url(url)

    async def xadd(self, stream: str, fields: dict[bytes, bytes]) -> None:
        await self._commands.xadd(stream, fields, maxlen=MAXLEN)  # type: ignore[arg-type]

    async def read(self, stream: str, last: bytes, group: bool) -> Entries:
        if group:
            batch: Any = await self._reader.xreadgroup(
                GROUP, "w", {stream: ">"}, count=READ_COUNT, block=BLOCK_MS
            )
        else:
            batch = await self._reader.xread({stream: last}, count=READ_COUNT, block=BLOCK_MS)
        return [entry for _stream, entries in batch or [] for entry in entries]

    async def settle(
        self, tasks: str, replies: str, entry_id: bytes, task_id: bytes, body: bytes
    ) -> None:
        pipe = self._commands.pipeline(transaction=False)
        pipe.set(b"bare:result:" + task_id, body, ex=60)
        pipe.xadd(replies, {b"id": task_id, b"b": body}, maxlen=MAXLEN)
        pipe.xack(tasks, GROUP, entry_id)
        pipe.xdel(tasks, entry_id)
        await pipe.execute()

    async def create_group(self, stream: str) -> None:
        with contextlib.suppress(aioredis.ResponseError):  # exists: a second run, same server
            await self._commands.xgroup_create(stream, GROUP, id="0", mkstream=True)

    async def newest(self, stream: str) -> bytes:
        entries: Any = await self._commands.xrevrange(stream, count=1)
        return bytes(entries[0][0]) if entries else b"0-0"

    async def aclose(self) -> None:
        await self._commands.aclose()
        await self._reader.aclose()


class _RespConnection(asyncio.Protocol):
    """Commands out as hiredis packs them, replies in order as hiredis parses them."""

    def __init__(self) -> None:
        self._parser = hiredis.Reader()
        self._waiting: list[asyncio.Future[Any]] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        while (reply := self._parser.gets()) is not False:
            self._waiting.pop(0).set_result(reply)

    def send(self, commands: Sequence[Sequence[Any]]) -> list[asyncio.Future[Any]]:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._waiting.extend(futures)
        self._transport.write(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        return futures

    async def call(self, *command: Any) -> Any:
        reply = await self.send([command])[0]
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class ProtocolClient:
    """The same commands as :class:`RedisPyClient` over two :class:`_RespConnection`."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._commands: _RespConnection | None = None
        self._reader: _RespConnection | None = None

    async def _connect(self) -> tuple[_RespConnection, _RespConnection]:
        if self._commands is None or self._reader is None:
            loop = asyncio.get_running_loop()
            _, self._commands = await loop.create_connection(_RespConnection, *self._address)
            _, self._reader = await loop.create_connection(_RespConnection, *self._address)
        return self._commands, self._reader

    async def xadd(self, stream: str, fields: dict[bytes, bytes]) -> None:
        commands, _ = await self._connect()
        flat = [item for pair in fields.items() for item in pair]
        await commands.call("XADD", stream, "MAXLEN", MAXLEN, "*", *flat)

    async def read(self, stream: str, last: bytes, group: bool) -> Entries:
        _, reader = await self._connect()
        options = ("COUNT", READ_COUNT, "BLOCK", BLOCK_MS, "STREAMS", stream)
        if group:
            batch = await reader.call("XREADGROUP", "GROUP", GROUP, "w", *options, ">")
        else:
            batch = await reader.call("XREAD", *options, last)
        return [
            (entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))
            for _stream, entries in batch or []
            for entry_id, flat in entries
        ]

    async def settle(
        self, tasks: str, replies: str, entry_id: bytes, task_id: bytes, body: bytes
    ) -> None:
        commands, _ = await self._connect()
        await asyncio.gather(
            *commands.send(
                [
                    ("SET", b"bare:result:" + task_id, body, "EX", 60),
                    ("XADD", replies, "MAXLEN", MAXLEN, "*", "id", task_id, "b", body),
                    ("XACK", tasks, GROUP, entry_id),
                    ("XDEL", tasks, entry_id),
                ]
            )
        )

    async def create_group(self, stream: str) -> None:
        commands, _ = await self._connect()
        with contextlib.suppress(hiredis.ReplyError):  # exists: a second run, same server
            await commands.call("XGROUP", "CREATE", stream, GROUP, "0", "MKSTREAM")

    async def newest(self, stream: str) -> bytes:
        commands, _ = await self._connect()
        entries = await commands.call("XREVRANGE", stream, "+", "-", "COUNT", 1)
        return bytes(entries[0][0]) if entries else b"0-0"

    async def aclose(self) -> None:
        for connection in (self._commands, self._reader):
            if connection is not None:
                connection.close()


def _client(kind: str, url: str) -> Client:
    return RedisPyClient(url) if kind == "redis-py" else ProtocolClient(url)


def _streams(kind: str) -> tuple[str, str]:
    return f"bare:{kind}:tasks", f"bare:{kind}:replies"


async def _serve(url: str, kind: str) -> None:
    client = _client(kind, url)
    tasks, replies = _streams(kind)
    await client.create_group(tasks)
    running: set[asyncio.Task[None]] = set()
    while True:
        for entry_id, fields in await client.read(tasks, b">", group=True):
            settle = client.settle(tasks, replies, entry_id, fields[b"id"], fields[b"p"])
            task = asyncio.ensure_future(settle)
            running.add(task)
            task.add_done_callback(running.discard)


class BareStreams:
    """The caller's side: a reply reader resolving one future per task id."""

    def __init__(self, url: str, kind: str, payload: bytes) -> None:
        self._client = _client(kind, url)
        self._tasks, self._replies = _streams(kind)
        self._payload = payload
        self._waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self._ids = itertools.count()
        self._loop: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BareStreams:
        # From the stream's last entry, known before any dispatch: a first read from "$" sent
        # after the first reply had landed never saw it, and the run waited 30 s for nothing
        # (2 of about 40 bench_dispatch runs).
        last = await self._client.newest(self._replies)
        self._loop = asyncio.ensure_future(self._read(last))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        await self._client.aclose()

    async def dispatch(self) -> bytes:
        task_id = str(next(self._ids)).encode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = future
        try:
            await self._client.xadd(self._tasks, {b"id": task_id, b"p": self._payload})
            return await future
        finally:
            del self._waiting[task_id]

    async def _read(self, last: bytes) -> None:
        while True:
            for entry_id, fields in await self._client.read(self._replies, last, group=False):
                last = entry_id
                future = self._waiting.get(fields[b"id"])
                if future is not None and not future.done():
                    future.set_result(fields[b"b"])


def main() -> None:
    url, kind = sys.argv[1], sys.argv[2]
    if kind not in CLIENTS:
        sys.exit(f"usage: bare_streams.py REDIS_URL {'|'.join(CLIENTS)}")
    try:  # the loop `nervenet worker` runs on (auto: uvloop when installed)
        import uvloop
    except ImportError:
        asyncio.run(_serve(url, kind))
    else:
        uvloop.run(_serve(url, kind))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
