"""Redis loses data under live processes (an operator deletes a stream, a FLUSHALL, a failover to
an empty replica): streams, consumer groups or registrations are gone, and the pool rebuilds them
and keeps serving. Runs on both backends. Restarts are in ``test_redis_outage.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from core_support import wait_until

from nervenet import Handlers, Pool, PoolSettings, Worker

READER_DIES = (
    "core bug: Worker._read_loop re-raises any ResponseError without 'NOGROUP': a real server "
    "unblocks the pending XREADGROUP with 'UNBLOCKED the stream key no longer exists', "
    "fakeredis answers XREADGROUP on a missing key with 'The XGROUP subcommand requires the key "
    "to exist' instead of NOGROUP; either way the read loop dies "
    "while the maintenance loop keeps the worker registered (a live-looking worker that never "
    "reads again)"
)
REGISTRY_GAP = (
    "core bug: Coordinator._require_worker raises NoLiveWorker while the registry is empty "
    "after Redis lost its data, although the task type was served a moment ago and its "
    "workers will register again at their next heartbeat"
)

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


async def test_a_worker_keeps_serving_after_its_task_stream_was_deleted(make_pool, serve):
    pool = await make_pool(settings=SLOW_HEARTBEAT)
    worker = await serve(pool, echo_handlers())
    await pool.dispatch("core/echo", b"1", timeout=10)
    await heartbeat_of(pool, worker)  # the next one, which would repair the group, is 2 s away

    await pool.transport.redis.delete(pool.keys.task_stream("core/echo"))  # e.g. to drop a backlog
    await asyncio.sleep(2 * pool.settings.block_ms / 1000)  # the worker reads the missing stream

    result = await pool.dispatch("core/echo", b"2", timeout=1.5, retries=0)
    assert orjson.loads(result) == {"echo": 2}


async def test_a_dispatch_while_the_registry_is_lost_waits_for_the_workers_to_return(
    make_pool, serve
):
    pool = await make_pool(settings=SLOW_HEARTBEAT)
    worker = await serve(pool, echo_handlers())
    await pool.dispatch("core/echo", b"1", timeout=10)

    await pool.transport.redis.delete(pool.keys.workers, pool.keys.worker(worker.worker_id))
    pool.registry.invalidate()  # as if the one-second cache had expired

    result = await pool.dispatch("core/echo", b"2", timeout=10, retries=0)
    assert orjson.loads(result) == {"echo": 2}
