"""The command batcher: a closing pool waits for the writes it already accepted, within a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from nervenet.batching import CommandBatcher


def set_n(pipe: Pipeline, n: int) -> object:
    """Queues ``SET k<n> <n>`` (a command builder for :meth:`CommandBatcher.submit`)."""
    return pipe.set(f"k{n}", n)


def incr_after(pipe: Pipeline, n: int) -> object:
    """Queues ``INCR after{<n>}`` (a command builder for :meth:`CommandBatcher.submit`)."""
    return pipe.incr(f"after{{{n}}}")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.client_unpause()
    await client.aclose()


async def test_drain_returns_once_the_queued_writes_are_sent(client: aioredis.Redis) -> None:
    batcher = CommandBatcher(client, lambda: None)
    await client.client_pause(300, all=False)  # a stalled server: CLIENT PAUSE 300 WRITE
    sent = [batcher.submit(partial(set_n, n=n)) for n in range(50)]

    await batcher.drain(timeout=5.0)

    assert all(s.done() and s.result() == [True] for s in sent)
    assert await client.get("k49") == b"49"


async def test_drain_gives_up_after_its_timeout(client: aioredis.Redis) -> None:
    batcher = CommandBatcher(client, lambda: None)
    await client.client_pause(5_000, all=False)  # CLIENT PAUSE 5000 WRITE
    sent = batcher.submit(lambda pipe: pipe.set("stuck", 1))

    started = time.monotonic()
    await batcher.drain(timeout=0.2)

    assert 0.15 < time.monotonic() - started < 2.0
    assert not sent.done()
    await client.client_unpause()
    await asyncio.wait_for(sent, 5.0)


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def any_client(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """A client on the single server or on the private cluster."""
    from nervenet.cluster import async_client

    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    client = await async_client(url)
    yield client
    await client.aclose()


async def test_a_batch_whose_commands_fail_to_build_fails_alone(any_client: Any) -> None:
    batcher = CommandBatcher(any_client, lambda: None)

    def half_built(pipe: Any) -> None:
        pipe.set("half", 1)  # added before the error: must not be sent
        raise ValueError("cannot encode this")

    before = batcher.submit(lambda pipe: pipe.set("before", 1))
    broken = batcher.submit(half_built)
    after = [batcher.submit(partial(incr_after, n=n)) for n in range(20)]

    assert await asyncio.wait_for(before, 5.0) == [True]
    with pytest.raises(ValueError, match="cannot encode"):
        await asyncio.wait_for(broken, 5.0)
    assert [await asyncio.wait_for(a, 5.0) for a in after] == [[1]] * 20
    assert await any_client.get("half") is None


async def test_a_command_refused_by_redis_fails_only_its_own_batch(any_client: Any) -> None:
    batcher = CommandBatcher(any_client, lambda: None)
    await any_client.set("text", "not a stream")

    refused = batcher.submit(lambda pipe: pipe.xadd("text", {"a": 1}))
    fine = batcher.submit(lambda pipe: pipe.set("fine", 1))

    with pytest.raises(Exception, match="WRONGTYPE"):
        await asyncio.wait_for(refused, 5.0)
    assert await asyncio.wait_for(fine, 5.0) == [True]
