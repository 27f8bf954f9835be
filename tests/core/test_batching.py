"""The command batcher: a closing pool waits for the writes it already accepted, within a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from nervenet.batching import CommandBatcher


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.execute_command("CLIENT", "UNPAUSE")
    await client.aclose()


async def test_drain_returns_once_the_queued_writes_are_sent(client: aioredis.Redis) -> None:
    batcher = CommandBatcher(client, lambda: None)
    await client.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # a stalled server
    sent = [batcher.submit(lambda pipe, n=n: pipe.set(f"k{n}", n)) for n in range(50)]

    await batcher.drain(timeout=5.0)

    assert all(s.done() and s.result() == [True] for s in sent)
    assert await client.get("k49") == b"49"


async def test_drain_gives_up_after_its_timeout(client: aioredis.Redis) -> None:
    batcher = CommandBatcher(client, lambda: None)
    await client.execute_command("CLIENT", "PAUSE", 5_000, "WRITE")
    sent = batcher.submit(lambda pipe: pipe.set("stuck", 1))

    started = time.monotonic()
    await batcher.drain(timeout=0.2)

    assert 0.15 < time.monotonic() - started < 2.0
    assert not sent.done()
    await client.execute_command("CLIENT", "UNPAUSE")
    await asyncio.wait_for(sent, 5.0)
