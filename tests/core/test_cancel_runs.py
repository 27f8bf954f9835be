"""Cancelling a run from any process: ``interrupt`` keeps what the run left, ``rollback`` has its
kind remove it; the run's work in flight on workers is cancelled; finished, unknown runs and
unknown actions are refused without changing anything."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from core_support import FAST, Pools, Serve, wait_until

from nervenet import ConfigurationError, Handlers, Pool, RunCancelled, RunStatus


class Blocker:
    """A task type whose handler runs until cancelled, and says so."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.handlers = Handlers()

        @self.handlers.task("cancel/block")
        async def block(value: Any) -> Any:
            self.started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return value


async def start_blocked_run(pool: Pool, run_id: str) -> Any:
    coordinator = pool.coordinator(run_id)

    async def body() -> bytes:
        return await coordinator.dispatch("cancel/block", b"1", task_id=f"{run_id}/0")

    return await pool.workflows.start("cancel/app", run_id, b"input", body)


async def test_interrupt_stops_the_run_and_the_handler_in_flight(pool: Pool, serve: Serve) -> None:
    blocker = Blocker()
    worker = await serve(pool, blocker.handlers)
    handle = await start_blocked_run(pool, "run-i")
    await asyncio.wait_for(blocker.started.wait(), 10)

    outcome = await pool.runs.cancel("run-i", "interrupt")

    assert outcome == "requested"
    with pytest.raises(RunCancelled, match="interrupt"):
        await handle.result(timeout=10)
    await asyncio.wait_for(blocker.cancelled.wait(), 10)
    run = await pool.runs.get("run-i")
    assert run.status is RunStatus.INTERRUPTED
    assert [n.outcome for n in run.nodes] == ["cancelled"]
    assert worker.load == 0


async def test_rollback_has_the_kind_remove_what_the_run_left(pool: Pool, serve: Serve) -> None:
    blocker = Blocker()
    removed: list[tuple[str, bytes]] = []

    async def rollback(run_id: str, payload: bytes) -> None:
        removed.append((run_id, payload))

    pool.workflows.register("cancel/app", lambda run_id, payload: asyncio.sleep(0, b""), rollback)
    await serve(pool, blocker.handlers)
    handle = await start_blocked_run(pool, "run-r")
    await asyncio.wait_for(blocker.started.wait(), 10)

    await pool.runs.cancel("run-r", "rollback")

    with pytest.raises(RunCancelled, match="rollback"):
        await handle.result(timeout=10)
    assert removed == [("run-r", b"input")]
    assert (await pool.runs.get("run-r")).status is RunStatus.CANCELLED


async def test_a_queued_run_is_cancelled_at_once_and_never_runs(pool: Pool) -> None:
    handle = await pool.workflows.enqueue("cancel/app", "run-q", b"")

    outcome = await pool.runs.cancel("run-q", "rollback")

    assert outcome == "cancelled"
    assert (await pool.runs.get("run-q")).status is RunStatus.CANCELLED
    assert await pool.transport.redis.zcard(pool.keys.workflows_queued) == 0
    with pytest.raises(RunCancelled):
        await handle.result(timeout=5)


@pytest.mark.redis
async def test_another_process_cancels_a_run_within_a_heartbeat(
    pools: Pools, redis_url: str, serve: Serve
) -> None:
    owner = await pools.open(Pool.from_url(redis_url, settings=FAST))
    operator = await pools.open(Pool.from_url(redis_url, settings=FAST))
    blocker = Blocker()
    await serve(owner, blocker.handlers)
    handle = await start_blocked_run(owner, "run-x")
    await asyncio.wait_for(blocker.started.wait(), 10)

    assert await operator.runs.cancel("run-x") == "requested"

    with pytest.raises(RunCancelled):
        await handle.result(timeout=10)
    await asyncio.wait_for(blocker.cancelled.wait(), 10)

    async def interrupted() -> bool:
        return (await operator.runs.get("run-x")).status is RunStatus.INTERRUPTED

    await wait_until(interrupted, what="the record to say interrupted")


async def test_a_finished_run_is_refused_and_left_alone(pool: Pool, serve: Serve) -> None:
    async def body() -> bytes:
        return b"ok"

    await (await pool.workflows.start("cancel/app", "run-done", b"", body)).result(timeout=10)

    with pytest.raises(ConfigurationError, match=r"already ended \(succeeded\)"):
        await pool.runs.cancel("run-done")
    assert (await pool.runs.get("run-done")).status is RunStatus.SUCCEEDED
    assert not await pool.transport.redis.exists(pool.keys.workflows_cancel)


async def test_unknown_runs_and_actions_are_refused(pool: Pool) -> None:
    await pool.workflows.enqueue("cancel/app", "run-q", b"")

    with pytest.raises(ConfigurationError, match="no run 'nobody'"):
        await pool.runs.cancel("nobody")
    with pytest.raises(ConfigurationError, match="is not one of interrupt, rollback"):
        await pool.runs.cancel("run-q", "obliterate")
    assert (await pool.runs.get("run-q")).status is RunStatus.PENDING
