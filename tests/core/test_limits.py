"""Queues route task types to the workers started for them; limits hold across every worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from core_support import Serve, wait_until

from nervenet import Handlers, NoLiveWorker, Pool

NODE_SECONDS = 0.1


class Concurrency:
    """How many handler runs overlap, and when each started."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.starts: list[float] = []

    def handler(self, seconds: float = NODE_SECONDS) -> Any:
        async def run(value: Any) -> Any:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.starts.append(time.monotonic())
            try:
                await asyncio.sleep(seconds)
            finally:
                self.now -= 1
            return value

        return run


async def _none_held(pool: Pool, key: str) -> bool:
    return int(await pool.transport.redis.zcard(pool.keys.permits(key))) == 0


async def test_a_capped_task_type_never_runs_more_than_its_cap_across_workers(
    pool: Pool, serve: Serve
) -> None:
    seen = Concurrency()
    handlers = Handlers()
    handlers.task("core/capped", max_concurrency=3)(seen.handler())
    for _ in range(3):
        await serve(pool, handlers)

    started = time.monotonic()
    await asyncio.gather(*(pool.dispatch("core/capped", b"1", timeout=30) for _ in range(30)))
    elapsed = time.monotonic() - started

    assert seen.peak == 3
    assert elapsed > 30 / 3 * NODE_SECONDS * 0.9  # the cap held
    assert elapsed < 30 / 3 * NODE_SECONDS * 3  # and was used: close to 3 / node latency
    # Every permit comes back (idle workers still poll with permits now and then).
    await wait_until(
        lambda: _none_held(pool, "core/capped"), timeout=5, what="every permit to come back"
    )


async def test_task_types_sharing_a_limit_key_share_one_cap(pool: Pool, serve: Serve) -> None:
    seen = Concurrency()
    handlers = Handlers()
    handlers.task("core/summarize", limit_key="llm", max_concurrency=3)(seen.handler())
    handlers.task("core/translate", limit_key="llm")(seen.handler())
    for _ in range(2):
        await serve(pool, handlers)

    await asyncio.gather(
        *(
            pool.dispatch(f"core/{kind}", b"1", timeout=30)
            for kind in ("summarize", "translate") * 10
        )
    )

    assert seen.peak == 3


async def test_a_rate_limit_paces_starts_across_workers(pool: Pool, serve: Serve) -> None:
    seen = Concurrency()
    handlers = Handlers()
    handlers.task("core/paced", rate_limit="20/s")(seen.handler(seconds=0))
    for _ in range(2):
        await serve(pool, handlers)

    await asyncio.gather(*(pool.dispatch("core/paced", b"1", timeout=30) for _ in range(30)))

    starts = sorted(seen.starts)
    in_any_second = max(sum(1 for t in starts if first <= t < first + 1.0) for first in starts)
    assert in_any_second <= 20 + 1  # the rate plus the documented burst of 1
    assert starts[-1] - starts[0] >= 29 / 20 * 0.9


async def test_a_limit_set_at_run_time_wins_over_the_one_in_code(pool: Pool, serve: Serve) -> None:
    seen = Concurrency()
    handlers = Handlers()
    handlers.task("core/capped", max_concurrency=10)(seen.handler())
    await serve(pool, handlers)
    await pool.limits.set("core/capped", max_concurrency=1)

    await asyncio.gather(*(pool.dispatch("core/capped", b"1", timeout=30) for _ in range(5)))

    assert seen.peak == 1
    [status] = await pool.limits.status()
    assert (status.key, status.max_concurrency) == ("core/capped", 1)


async def test_a_full_cap_never_holds_back_the_workers_other_task_types(
    pool: Pool, serve: Serve
) -> None:
    seen = Concurrency()
    handlers = Handlers()
    handlers.task("core/slow-capped", max_concurrency=1)(seen.handler(seconds=2.0))

    @handlers.task("core/free")
    async def free(value: Any) -> Any:
        return value

    await serve(pool, handlers, concurrency=4)
    capped = [
        asyncio.ensure_future(pool.dispatch("core/slow-capped", b"1", timeout=30)) for _ in range(8)
    ]
    await asyncio.sleep(0.3)  # one runs, seven wait for the permit (in Redis)

    started = time.monotonic()
    await asyncio.gather(*(pool.dispatch("core/free", b"2", timeout=10) for _ in range(20)))

    assert time.monotonic() - started < 1.5
    for task in capped:
        task.cancel()
    await asyncio.gather(*capped, return_exceptions=True)


async def test_a_queue_routes_its_task_types_to_its_workers_only(pool: Pool, serve: Serve) -> None:
    gpu_runs: list[str] = []
    handlers = Handlers()

    @handlers.task("core/embed", queue="gpu")
    async def embed(value: Any, ctx: Any) -> Any:
        gpu_runs.append(ctx.pool.process_id)
        return value

    @handlers.task("core/plain")
    async def plain(value: Any) -> Any:
        return value

    cpu_worker = await serve(pool, handlers, queues=["default"])
    assert set(cpu_worker.handlers) == {"core/plain"}
    with pytest.raises(NoLiveWorker) as refused:
        await pool.dispatch("core/embed", b"1", timeout=5, queue="gpu")
    assert "queue 'gpu'" in str(refused.value)
    assert "--queues gpu" in str(refused.value)

    waiting = asyncio.ensure_future(
        pool.dispatch("core/embed", b"2", timeout=10, queue="gpu", wait_for_worker=True)
    )
    await asyncio.sleep(0.3)
    gpu_worker = await serve(pool, handlers, queues="gpu")

    assert await asyncio.wait_for(waiting, 10) == b"2"
    assert set(gpu_worker.handlers) == {"core/embed"}
    assert cpu_worker.processed == 0 and gpu_worker.processed == 1


async def test_an_idle_task_type_spends_none_of_a_shared_rate(pool: Pool, serve: Serve) -> None:
    """Workers poll a quiet limited task type with permits; unused, they give the tokens back."""
    seen = Concurrency()
    handlers = Handlers()
    handlers.task("core/busy", limit_key="api", rate_limit="10/s")(seen.handler(seconds=0))
    handlers.task("core/quiet", limit_key="api")(seen.handler(seconds=0))
    for _ in range(2):
        await serve(pool, handlers)
    await asyncio.sleep(0.5)  # the quiet type's loops are polling

    started = time.monotonic()
    await asyncio.gather(*(pool.dispatch("core/busy", b"1", timeout=30) for _ in range(20)))

    assert time.monotonic() - started < 19 / 10 * 1.5  # about 10/s, not what polling left
