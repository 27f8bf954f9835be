"""An idle pool costs (almost) no CPU. fakeredis answers ``XREADGROUP BLOCK`` at once, so the
embedded transport must wait on its own signal instead of spinning; the real server blocks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from core_support import MakePool, Serve

from nervenet import Handlers, Pool, PoolSettings

#: Two windows of half a second each; the quieter one is judged (below).
IDLE_SECONDS = 0.5
#: A spinning loop uses the whole window; an idle pool used 0.008 s of a half-second window
#: (FAST settings, a real server, 2026-12-08), on a machine at a third of the speed of others.
MAX_CPU_SECONDS = 0.15


def handlers(release: asyncio.Event) -> Handlers:
    served = Handlers()

    @served.task("core/echo")
    async def echo(value: Any) -> Any:
        return value

    @served.task("core/wait")
    async def wait(value: Any) -> Any:
        await release.wait()
        return value

    return served


async def cpu_seconds_while_idle() -> float:
    """This process's CPU seconds in the quieter of two windows. A spin shows in both; the
    threads a previous test left winding down (process time counts every thread) may show in
    one: the full suite once measured 0.45 s in a single 1 s window where a pool alone uses
    0.016."""
    used = []
    for _ in range(2):
        before = time.process_time()
        await asyncio.sleep(IDLE_SECONDS)  # the measurement window, not a wait for an event
        used.append(time.process_time() - before)
    return min(used)


@pytest.mark.parametrize("settings", [PoolSettings(), None], ids=["default-settings", "fast"])
async def test_a_pool_with_workers_and_no_work_idles(
    make_pool: MakePool, serve: Serve, settings: PoolSettings | None
) -> None:
    pool = await (make_pool(settings=settings) if settings else make_pool())
    release = asyncio.Event()
    for _ in range(2):
        await serve(pool, handlers(release))
    await pool.dispatch("core/echo", b"1", timeout=10)  # everything is up and has run once

    assert await cpu_seconds_while_idle() < MAX_CPU_SECONDS


async def test_a_pool_waiting_for_a_long_task_idles(pool: Pool, serve: Serve) -> None:
    release = asyncio.Event()
    await serve(pool, handlers(release))
    waiting = asyncio.ensure_future(pool.dispatch("core/wait", b"2", timeout=30))
    await asyncio.sleep(0.1)  # let the task reach the handler

    used = await cpu_seconds_while_idle()

    release.set()
    assert await waiting == b"2"
    assert used < MAX_CPU_SECONDS
