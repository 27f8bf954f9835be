"""Redis fails or loses data under live processes (a command fails on a dead connection, an
operator deletes a stream, a failover to an empty replica): streams, consumer groups or
registrations are gone, and the pool rebuilds them and keeps serving. Runs on both backends.
Restarts of a real server are in ``test_redis_outage.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from core_support import MakePool, Serve, stream_totals, wait_until
from redis.exceptions import ConnectionError as RedisConnectionError

from nervenet import Handlers, Pool, PoolSettings, Worker

#: A long heartbeat, so nothing is repaired by a heartbeat while the test looks.
SLOW_HEARTBEAT = PoolSettings(
    heartbeat_interval=2.0, visibility_timeout=4.0, lease_ttl=4.0, block_ms=200
)


def echo_handlers() -> Handlers:
    handlers = Handlers()

    @handlers.task("core/echo")
    async def echo(value: Any) -> Any:
        return {"echo": value}

    return handlers


async def heartbeat_of(pool: Pool, worker: Worker) -> None:
    """Return right after the worker's next heartbeat (its registration's expiry moves)."""
    first = await pool.transport.redis.zscore(pool.keys.workers, worker.worker_id)

    async def moved() -> bool:
        return await pool.transport.redis.zscore(pool.keys.workers, worker.worker_id) != first

    await wait_until(moved, timeout=2 * pool.settings.heartbeat_interval, what="a heartbeat")


async def test_a_worker_keeps_serving_after_its_task_stream_was_deleted(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SLOW_HEARTBEAT)
    worker = await serve(pool, echo_handlers())
    await pool.dispatch("core/echo", b"1", timeout=10)
    await heartbeat_of(pool, worker)  # the next one, which would repair the group, is 2 s away

    for stream in pool.keys.task_streams("core/echo"):  # e.g. to drop a backlog
        await pool.transport.redis.delete(stream)
    await asyncio.sleep(2 * pool.settings.block_ms / 1000)  # the worker reads the missing stream

    result = await pool.dispatch("core/echo", b"2", timeout=1.5, retries=0)
    assert orjson.loads(result) == {"echo": 2}


async def test_a_dispatch_while_the_registry_is_lost_waits_for_the_workers_to_return(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SLOW_HEARTBEAT)
    worker = await serve(pool, echo_handlers())
    await pool.dispatch("core/echo", b"1", timeout=10)

    await pool.transport.redis.delete(pool.keys.workers, pool.keys.worker(worker.worker_id))
    pool.registry.invalidate()  # as if the one-second cache had expired

    result = await pool.dispatch("core/echo", b"2", timeout=10, retries=0)
    assert orjson.loads(result) == {"echo": 2}


def fail_once(pool: Pool, command: str, *, key_prefix: str) -> list[str]:
    """Make the next ``command`` on keys starting with ``key_prefix`` raise the error a
    connection cut by a Redis restart raises; return the keys it failed on. ``mget`` is the
    transport's (on a cluster it splits the keys per slot)."""
    client: Any = pool.transport if command == "mget" else pool.transport.redis
    real = getattr(client, command)
    failed: list[str] = []

    async def flaky(keys: Any, *args: Any, **kwargs: Any) -> Any:
        first = keys[0] if isinstance(keys, list | tuple) else keys
        if not failed and str(first).startswith(key_prefix):
            failed.append(str(first))
            raise RedisConnectionError("Connection closed by server.")
        return await real(keys, *args, **kwargs)

    setattr(client, command, flaky)
    return failed


async def test_a_worker_keeps_serving_when_redis_fails_while_it_accepts_a_task(
    pool: Pool, serve: Serve
) -> None:
    await serve(pool, echo_handlers())
    failed = fail_once(pool, "mget", key_prefix=pool.keys.result("")[:-1])

    # A deterministic task id: a dispatch without one skips the result-cache lookup.
    result = await pool.dispatch("core/echo", b"1", task_id="step-1", timeout=2, retries=1)

    assert failed  # the fault did hit the worker
    assert orjson.loads(result) == {"echo": 1}
    assert (await stream_totals(pool, "core/echo"))[1] == 0
