"""The lean RESP connections of the hot path (nervenet.resp) answer as redis-py would.

They carry the write batcher's pipelines and every blocking stream read on a single server, so
what they return, raise and do on a lost connection must be what redis-py's client does there.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import parse_url
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nervenet import resp
from nervenet.resp import RespEndpoint, RespReaders, stream_batch
from nervenet.testing import RedisServer
from nervenet.transport import RedisTransport

pytestmark = pytest.mark.redis


def endpoint(url: str) -> RespEndpoint:
    return RespEndpoint(dict(parse_url(url)))


@pytest.fixture
async def transport(redis_url: str) -> AsyncIterator[RedisTransport]:
    """The pool's transport on a single server: its hot path runs on lean connections."""
    transport = RedisTransport(redis_url)
    await transport.check()
    yield transport
    await transport.aclose()


@pytest.fixture
def client(transport: RedisTransport) -> aioredis.Redis:
    """The transport's redis-py client (everything off the hot path goes through it)."""
    return transport.redis


def the_batchers_commands(pipe: Pipeline) -> None:
    """One of each command shape the pool's batched writes use, replies of every kind."""
    pipe.set("result", b"\x00bytes", ex=60)
    pipe.xadd("tasks", {b"f": b"v", "n": 1}, maxlen=100, approximate=True)
    pipe.xadd("replies", {b"f": b"v"}, maxlen=100, approximate=True, nomkstream=True)
    pipe.xgroup_create("tasks", "workers", id="0")
    pipe.xreadgroup("workers", "w1", {"tasks": ">"}, count=10)
    pipe.xpending_range("tasks", "workers", min="-", max="+", count=10)
    pipe.xinfo_groups("tasks")
    pipe.hset("record", mapping={"status": "running", "attempt": 2})
    pipe.hmget("record", ["status", "missing"])
    pipe.zadd("leases", {"run-1": 1.5})
    pipe.zscore("leases", "run-1")
    pipe.expire("record", 60)
    pipe.incr("result")  # an error reply: not an integer
    pipe.get("missing")
    pipe.delete("nothing")


async def replies(pipe: Pipeline, run: Callable[[Pipeline], Any]) -> list[Any]:
    the_batchers_commands(pipe)
    return list(await run(pipe))


def comparable(values: list[Any]) -> list[str]:
    """Error replies compare by class and message; entry ids differ from run to run."""
    return [
        f"{type(value).__name__}: {value}"
        if isinstance(value, Exception)
        else re.sub(r"\d{10,}-\d+", "<id>", repr(value))
        for value in values
    ]


async def test_a_pipeline_returns_what_redis_py_returns(
    client: aioredis.Redis, transport: RedisTransport
) -> None:
    expected = await replies(client.pipeline(transaction=False), lambda p: p.execute(False))
    await client.flushdb()

    got = await replies(client.pipeline(transaction=False), transport.execute)

    assert [type(v) for v in got] == [type(v) for v in expected]
    assert comparable(got) == comparable(expected)
    assert isinstance(got[12], ResponseError)
    assert got[0] is True and got[3] is True and got[13] is None
    assert got[8] == [b"running", None] and got[10] == 1.5
    # Entries and pending lists parse into redis-py's shapes (ids and idle times aside).
    assert [e[1] for e in got[4][0][1]] == [{b"f": b"v", b"n": b"1"}]
    assert got[6][0]["name"] == b"workers" and got[6][0]["pending"] == 1
    assert got[5][0]["consumer"] == b"w1"


async def test_a_blocking_read_returns_entries_in_redis_pys_shape(
    redis_url: str, client: aioredis.Redis
) -> None:
    readers = RespReaders(endpoint(redis_url))
    try:
        first = await client.xadd("s", {b"a": b"1"})
        reply = await readers.call("XREAD", "COUNT", 10, "BLOCK", 100, "STREAMS", "s", "0")
        assert stream_batch(reply) == [(b"s", [(first, {b"a": b"1"})])]
        assert stream_batch(await readers.call("XREAD", "BLOCK", 50, "STREAMS", "s", "$")) == []
    finally:
        readers.close()


async def test_a_read_cancelled_while_blocked_leaves_no_stale_reply(
    redis_url: str, client: aioredis.Redis
) -> None:
    readers = RespReaders(endpoint(redis_url))
    try:
        blocked = asyncio.ensure_future(
            readers.call("XREAD", "BLOCK", 2000, "STREAMS", "late", "$")
        )
        await asyncio.sleep(0.1)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        await client.xadd("late", {b"a": b"1"})  # would have answered the cancelled read

        started = time.monotonic()
        reply = await readers.call("XREAD", "BLOCK", 300, "STREAMS", "other", "$")

        assert reply is None
        assert time.monotonic() - started >= 0.25  # a fresh read, not the stale answer
    finally:
        readers.close()


async def test_error_replies_are_redis_pys_exceptions(redis_url: str) -> None:
    readers = RespReaders(endpoint(redis_url))
    try:
        with pytest.raises(ResponseError, match="NOGROUP"):
            await readers.call("XREADGROUP", "GROUP", "g", "c", "STREAMS", "none", ">")
        assert await readers.call("PING") == b"PONG"  # the connection stays usable
    finally:
        readers.close()


async def test_a_lost_connection_fails_the_pending_reply_and_the_next_call_reconnects(
    own_redis: RedisServer,
) -> None:
    readers = RespReaders(endpoint(own_redis.url))
    try:
        blocked = asyncio.ensure_future(readers.call("XREAD", "BLOCK", 5000, "STREAMS", "s", "$"))
        await asyncio.sleep(0.1)
        own_redis.restart()

        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(blocked, 5)
        assert await readers.call("PING") == b"PONG"
    finally:
        readers.close()


async def test_the_url_password_and_database_are_used() -> None:
    with RedisServer(password="s3cret") as server:
        url = server.url.replace("/0", "/3")
        readers = RespReaders(endpoint(url))
        other = aioredis.Redis.from_url(url)
        try:
            await other.set("where", "db3")
            assert await readers.call("GET", "where") == b"db3"
        finally:
            readers.close()
            await other.aclose()

        wrong = RespReaders(endpoint(server.url.replace("s3cret", "wrong")))
        with pytest.raises(AuthenticationError):
            await wrong.call("PING")
        wrong.close()


async def test_a_read_on_a_connection_that_never_answers_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer gone without a reset (a network partition) never answers: the read fails as an
    outage, instead of waiting forever, and its connection is not used again."""
    monkeypatch.setattr(resp, "READ_GRACE", 0.3)
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    readers = RespReaders(endpoint(f"redis://127.0.0.1:{port}/0"))
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await readers.call("XREAD", "BLOCK", 100, "STREAMS", "s", "$", block_ms=100)
        assert 0.35 <= time.monotonic() - started < 3.0
        assert not readers._idle  # closed, not kept
    finally:
        readers.close()
        silent.close()
