"""The floor under a dispatch's round trip: the same Redis hops as nervenet, in bare redis-py.

A dispatch through Redis Streams takes, at the least, what nervenet's takes: the caller's
``XADD`` of the task, the worker's ``XREADGROUP BLOCK`` that returns it, the worker's settle
pipeline (cache ``SET``, reply ``XADD``, ``XACK``, ``XDEL``) and the caller's ``XREAD BLOCK`` of
the reply stream. This module does exactly that and nothing else (no envelope, no validation,
no retries, no registry, no heartbeats), with the same client library, parser and event loop,
so ``bench_dispatch.py`` can tell what of a round trip is nervenet's code and what is the
hops themselves (syscalls, loopback, Redis). Nothing here is fit for production use.

Run as a script, it is the worker:  ``python bare_streams.py REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

TASKS, REPLIES, GROUP = "bare:tasks", "bare:replies", "bare"
READ_COUNT = 1000
BLOCK_MS = 1000


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False)


async def _serve(url: str) -> None:
    commands, reader = _client(url), _client(url)
    with contextlib.suppress(ResponseError):  # exists: a second run on the same server
        await commands.xgroup_create(TASKS, GROUP, id="0", mkstream=True)
    running: set[asyncio.Task[None]] = set()

    async def settle(entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        pipe = commands.pipeline(transaction=False)
        pipe.set(b"bare:result:" + fields[b"id"], fields[b"p"], ex=60)
        pipe.xadd(REPLIES, {b"id": fields[b"id"], b"b": fields[b"p"]}, maxlen=10_000)
        pipe.xack(TASKS, GROUP, entry_id)
        pipe.xdel(TASKS, entry_id)
        await pipe.execute()

    while True:
        batch: Any = await reader.xreadgroup(
            GROUP, "w", {TASKS: ">"}, count=READ_COUNT, block=BLOCK_MS
        )
        for _stream, entries in batch or []:
            for entry_id, fields in entries:
                task = asyncio.ensure_future(settle(entry_id, fields))
                running.add(task)
                task.add_done_callback(running.discard)


class BareStreams:
    """The caller's side: a reply reader resolving one future per task id."""

    def __init__(self, url: str, payload: bytes) -> None:
        self._commands, self._reader = _client(url), _client(url)
        self._payload = payload
        self._waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self._ids = itertools.count()
        self._loop: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BareStreams:
        self._loop = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        await self._commands.aclose()
        await self._reader.aclose()

    async def dispatch(self) -> bytes:
        task_id = str(next(self._ids)).encode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = future
        try:
            await self._commands.xadd(TASKS, {b"id": task_id, b"p": self._payload}, maxlen=10_000)
            return await future
        finally:
            del self._waiting[task_id]

    async def _read(self) -> None:
        last: bytes | str = "$"
        while True:
            batch: Any = await self._reader.xread({REPLIES: last}, count=READ_COUNT, block=BLOCK_MS)
            for _stream, entries in batch or []:
                for entry_id, fields in entries:
                    last = entry_id
                    future = self._waiting.get(fields[b"id"])
                    if future is not None and not future.done():
                        future.set_result(fields[b"b"])


def main() -> None:
    try:  # the loop `nervenet worker` runs on (auto: uvloop when installed)
        import uvloop
    except ImportError:
        asyncio.run(_serve(sys.argv[1]))
    else:
        uvloop.run(_serve(sys.argv[1]))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
