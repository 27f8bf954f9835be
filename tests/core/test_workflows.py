"""Durable runs at the core level: a run that ends while its lease is being renewed ends
normally; a run whose process stalled longer than a lease goes on if no other process claimed
it, and stops if one did. Takeovers by other processes are shown with real processes in
tests/langgraph (crash recovery) and tests/chaos. Runs on every backend."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

import pytest
from core_support import MakePool

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
            await pool.workflows.check_owned("early-run")
            return b"the result"

        handle = await pool.workflows.start("core-kind", "early-run", b"input", run)

        assert await handle.result(timeout=5) == b"the result"
    finally:
        await pool.aclose()


STALLS = PoolSettings(heartbeat_interval=0.1, lease_ttl=0.3)


async def test_a_run_outliving_a_stall_of_its_event_loop_ends_here_when_nobody_took_it(
    make_pool: MakePool,
) -> None:
    """A loop that stalls longer than a lease (CPU-starved, a long collection) misses the
    renewals; no other process claimed the run meanwhile, so it is still this process's:
    it dispatches on and ends here, once. (Judged by the clock alone, the run was dropped
    with LeaseLost and nobody ran it on: the starved crash-recovery test never finished.)"""
    pool = await make_pool(settings=STALLS)
    steps: list[str] = []

    async def run() -> bytes:
        time.sleep(3 * STALLS.lease_ttl)  # the loop stalls: no renewal for three leases
        await pool.workflows.check_owned("stalled")  # as before a node's dispatch
        steps.append("dispatched on")
        time.sleep(3 * STALLS.lease_ttl)  # and again just before the end
        return b"the result"

    handle = await pool.workflows.start("core-kind", "stalled", b"input", run)

    assert await handle.result(timeout=10) == b"the result"
    assert steps == ["dispatched on"]
    record = await handle.record()
    assert record is not None and record.status == "done"


async def test_a_run_claimed_by_another_process_during_a_stall_stops_here(
    make_pool: MakePool,
) -> None:
    """The other side of the same stall: another process claimed the run meanwhile (its owner
    in Redis says so), so this one is a zombie and goes no further."""
    pool = await make_pool(settings=STALLS)
    steps: list[str] = []

    async def run() -> bytes:
        time.sleep(3 * STALLS.lease_ttl)
        # What a claim by another process leaves, written while our renewals are late.
        await pool.transport.redis.hset(pool.keys.workflow_owners, "claimed", "another-process")
        await pool.workflows.check_owned("claimed")
        steps.append("dispatched on")
        return b"a zombie's result"

    await pool.workflows.start("core-kind", "claimed", b"input", run)
    await asyncio.sleep(1.0)

    assert steps == []
    record = await pool.workflows.record("claimed")
    assert record is not None and record.status == "running"  # the new owner's to end
