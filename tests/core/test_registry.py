"""The registry and the status snapshot: who is alive, what they serve, what is queued, as
dispatchers and operators see it. Worker processes and their expiry after death are in
``test_worker_processes.py``; ``nervenet status`` itself is in ``test_cli.py``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from core_support import Serve, wait_until

from nervenet import Handlers, Pool
from nervenet.envelope import TaskEnvelope
from nervenet.registry import WorkerInfo


def handlers() -> Handlers:
    served = Handlers()

    @served.task("core/echo")
    async def echo(value: Any) -> Any:
        return value

    @served.task("core/other")
    async def other(value: Any) -> Any:
        return value

    return served


async def test_pool_workers_lists_each_live_worker_with_its_task_types(
    pool: Pool, serve: Serve
) -> None:
    first = await serve(pool, handlers(), concurrency=5)
    second = await serve(pool, handlers(), concurrency=7)

    listed = {w.worker_id: w for w in await pool.workers()}

    assert set(listed) == {first.worker_id, second.worker_id}
    assert listed[first.worker_id].task_types == ("core/echo", "core/other")
    assert listed[first.worker_id].concurrency == 5
    assert listed[second.worker_id].concurrency == 7


async def test_a_stopped_worker_leaves_the_registry_at_once(pool: Pool, serve: Serve) -> None:
    worker = await serve(pool, handlers())

    await worker.stop(grace=0)

    assert worker.worker_id not in {w.worker_id for w in await pool.workers()}


async def test_a_registration_that_is_not_renewed_expires(pool: Pool) -> None:
    info = WorkerInfo(
        worker_id="w-frozen",
        task_types=("core/echo",),
        concurrency=1,
        load=0,
        started_at=time.time(),
        host="elsewhere:1",
        processed=0,
    )
    await pool.registry.register(info, ttl=0.3)
    assert [w.worker_id for w in await pool.workers()] == ["w-frozen"]

    async def expired() -> bool:
        return await pool.workers() == []

    await wait_until(expired, timeout=2, what="the registration to expire")
    assert "core/echo" not in await pool.registry.served_task_types(fresh=True)


async def test_pool_status_shows_waiting_in_flight_workers_and_escalations(
    pool: Pool, serve: Serve
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    handlers = Handlers()

    @handlers.task("core/wait")
    async def wait(value: Any) -> Any:
        started.set()
        await release.wait()
        return value

    worker = await serve(pool, handlers, concurrency=1)
    dispatches = [
        asyncio.ensure_future(pool.dispatch("core/wait", str(i).encode(), timeout=10))
        for i in range(3)
    ]
    await started.wait()
    await pool.escalate(
        TaskEnvelope("t-x", "wf", "core/wait", 1, 0.0, pool.inbox.address, b"{}"), "stuck"
    )

    status = await pool.status()

    release.set()
    await asyncio.gather(*dispatches)
    [queue] = status.queues
    assert (queue.task_type, queue.waiting, queue.in_flight) == ("core/wait", 2, 1)
    assert queue.served
    assert [w.worker_id for w in status.workers] == [worker.worker_id]
    assert status.escalations == 1
    assert status.namespace == "nn"


async def test_dispatches_rely_on_a_slightly_stale_registry_read_while_it_refreshes(
    pool: Pool, serve: Serve
) -> None:
    """No dispatch queues behind the registry's round trip: a read up to STALE_SECONDS old
    answers at once and is refreshed in the background; an older one answers nothing."""
    await serve(pool, handlers())
    registry = pool.registry
    await registry.served_task_types(fresh=True)
    assert registry.known_served("core/echo")
    assert not registry.known_served("core/unserved")

    registry._served_at -= registry.CACHE_SECONDS + 0.5  # a read 1.5 s old
    read_at = registry._served_at
    assert registry.known_served("core/echo")

    async def refreshed() -> bool:
        return registry._served_at > read_at

    await wait_until(refreshed, timeout=5, what="the background refresh")
    registry._served_at -= registry.STALE_SECONDS + 0.5
    assert not registry.known_served("core/echo")  # too old: the caller reads Redis itself
