"""Durable runs at the core level: a run that ends while its lease is being renewed ends
normally. Takeovers by other processes are shown with real processes in tests/langgraph
(crash recovery) and tests/chaos. Runs on both backends."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import pytest

from nervenet import Pool, PoolSettings


async def test_a_run_ending_during_a_lease_renewal_is_not_taken_for_a_lost_lease(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """The end of a run unleases it before announcing it; a renewal that reads the owners in
    between must not see a lease lost to another process and cancel the finishing run (the
    announcement of its end would be cut off)."""
    workflows = pool.workflows
    unlease = workflows._unlease

    async def unlease_then_renew(run_id: str) -> None:
        await unlease(run_id)
        await workflows._heartbeat()  # a beat renews the leases, right in the window

    workflows._unlease = unlease_then_renew  # type: ignore[method-assign]

    async def run() -> bytes:
        await asyncio.sleep(0.05)
        return b"the result"

    with caplog.at_level(logging.WARNING, logger="nervenet"):
        handle = await workflows.start("core-kind", "run-1", b"input", run)
        assert await handle.result(timeout=10) == b"the result"

    record = await handle.record()
    assert record is not None
    assert record.status == "done"
    # The pool's client leaves replies as bytes (no decode_responses).
    announced = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await pool.transport.redis.xrange(pool.keys.workflows_done),
    )
    assert [fields[b"run"] for _, fields in announced] == [b"run-1"]
    assert "lost the lease" not in caplog.text


async def test_a_pool_made_long_before_its_first_run_holds_that_runs_lease() -> None:
    """Apps make their pool at import time and start runs much later: the first runs, before
    the pool's first heartbeat, must count as owned here (they were just leased), not as runs
    whose renewals lapsed while the pool was idle (which stopped them with LeaseLost and left
    them running forever)."""
    pool = Pool.local(settings=PoolSettings(heartbeat_interval=0.3, lease_ttl=0.6))
    try:
        await asyncio.sleep(0.7)  # idle longer than a lease, before the pool starts

        async def run() -> bytes:
            pool.workflows.check_owned("early-run")
            return b"the result"

        handle = await pool.workflows.start("core-kind", "early-run", b"input", run)

        assert await handle.result(timeout=5) == b"the result"
    finally:
        await pool.aclose()
