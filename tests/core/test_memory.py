"""What a coordinator process keeps per dispatch in flight: the payload a retry needs (none when the
payload is given as the function that builds it), and little else. On the real server only, where
task entries live outside this process."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from collections.abc import Callable

import pytest
from core_support import register_silent_worker, wait_until

from nervenet import Pool

pytestmark = pytest.mark.redis

PENDING = 1_000
PAYLOAD = 10_000
#: Everything but the payload: the dispatch's task and frames, envelope, waiter, future. Measured
#: at about 2.5 KiB on Python 3.11; the bound leaves room for other versions.
OVERHEAD_LIMIT = 8 * 1024


@pytest.mark.parametrize("given_as", ["bytes", "function"])
async def test_a_pending_dispatch_holds_at_most_its_payload_and_a_few_kib_more(
    redis_pool: Pool, given_as: str
) -> None:
    """Given as bytes, the payload is the caller's and stays alive for a retry; given as a
    function that builds it (as a graph node's dispatch does), no copy of it is kept."""
    pool = redis_pool
    await register_silent_worker(pool, "core/silent")  # every dispatch stays pending
    kept = PAYLOAD if given_as == "bytes" else 0

    def payload() -> bytes | Callable[[], bytes]:
        data = os.urandom(PAYLOAD)
        return data if given_as == "bytes" else lambda: bytes(PAYLOAD)

    async def published(count: int) -> bool:
        waiters = pool.inbox.pending()
        return len(waiters) == count and all(w.entry_id is not None for w in waiters)

    async def hold(count: int) -> tuple[list[asyncio.Task[bytes]], int]:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        dispatches = [
            asyncio.ensure_future(pool.dispatch("core/silent", payload())) for _ in range(count)
        ]
        await wait_until(lambda: published(count), timeout=60, what="every task published")
        gc.collect()
        return dispatches, tracemalloc.get_traced_memory()[0] - before

    warm_up, _ = await hold(20)
    for dispatch in warm_up:
        dispatch.cancel()
    await asyncio.gather(*warm_up, return_exceptions=True)
    tracemalloc.start()
    try:
        dispatches, grown = await hold(PENDING)
    finally:
        tracemalloc.stop()
    for dispatch in dispatches:
        dispatch.cancel()
    await asyncio.gather(*dispatches, return_exceptions=True)

    assert grown / PENDING - kept < OVERHEAD_LIMIT
