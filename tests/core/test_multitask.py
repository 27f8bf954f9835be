"""A thread runs one run at a time across every coordinator process; a run submitted on a busy
thread waits (enqueue), is refused (reject) or cancels the busy one (interrupt, rollback)."""

from __future__ import annotations

import asyncio

import pytest
from core_support import FAST, Pools, wait_until

from nervenet import ConfigurationError, Pool, RunCancelled, RunStatus, ThreadBusy


class Runs:
    """Run bodies that log when they start and finish when released."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    def body(self, run_id: str):  # type: ignore[no-untyped-def]
        self.release[run_id] = asyncio.Event()

        async def run() -> bytes:
            self.log.append(f"start {run_id}")
            await self.release[run_id].wait()
            self.log.append(f"end {run_id}")
            return run_id.encode()

        return run

    async def start(self, pool: Pool, run_id: str, thread: str, multitask: str = "enqueue"):  # type: ignore[no-untyped-def]
        return await pool.workflows.start(
            "mt/app", run_id, b"", self.body(run_id), thread=thread, multitask=multitask
        )


async def started(runs: Runs, run_id: str) -> None:
    async def seen() -> bool:
        return f"start {run_id}" in runs.log

    await wait_until(seen, what=f"{run_id} to start")


async def test_enqueue_runs_the_second_run_after_the_first(pool: Pool) -> None:
    runs = Runs()
    first = await runs.start(pool, "run-1", "t-1")
    await started(runs, "run-1")
    second = await runs.start(pool, "run-2", "t-1")

    async def pending() -> bool:
        return (await pool.runs.get("run-2")).status is RunStatus.PENDING

    await wait_until(pending, what="the second run to wait")
    assert runs.log == ["start run-1"]
    runs.release["run-1"].set()
    runs.release["run-2"].set()

    assert (await first.result(10), await second.result(10)) == (b"run-1", b"run-2")
    assert runs.log == ["start run-1", "end run-1", "start run-2", "end run-2"]
    assert (await pool.runs.get("run-2")).status is RunStatus.SUCCEEDED


async def test_runs_on_different_threads_run_at_once(pool: Pool) -> None:
    runs = Runs()
    await runs.start(pool, "run-a", "t-a")
    await runs.start(pool, "run-b", "t-b")

    await started(runs, "run-a")
    await started(runs, "run-b")
    for event in runs.release.values():
        event.set()


async def test_reject_refuses_a_run_on_a_busy_thread_and_records_nothing(pool: Pool) -> None:
    runs = Runs()
    await runs.start(pool, "run-1", "t-1")
    await started(runs, "run-1")

    with pytest.raises(ThreadBusy, match="thread 't-1' is busy with run 'run-1'"):
        await runs.start(pool, "run-2", "t-1", multitask="reject")

    with pytest.raises(ConfigurationError, match="no run 'run-2'"):
        await pool.runs.get("run-2")
    runs.release["run-1"].set()


@pytest.mark.parametrize(
    ("strategy", "ended"), [("interrupt", "interrupted"), ("rollback", "cancelled")]
)
async def test_interrupt_and_rollback_cancel_the_busy_run_then_run(
    pool: Pool, strategy: str, ended: str
) -> None:
    runs = Runs()
    rolled_back: list[str] = []

    async def rollback(run_id: str, payload: bytes) -> None:
        rolled_back.append(run_id)

    pool.workflows.register("mt/app", lambda run_id, payload: asyncio.sleep(0, b""), rollback)
    first = await runs.start(pool, "run-1", "t-1")
    await started(runs, "run-1")

    second = await runs.start(pool, "run-2", "t-1", multitask=strategy)
    await started(runs, "run-2")
    runs.release["run-2"].set()

    with pytest.raises(RunCancelled):
        await first.result(10)
    assert await second.result(10) == b"run-2"
    assert (await pool.runs.get("run-1")).status.value == ended
    assert rolled_back == (["run-1"] if strategy == "rollback" else [])


async def test_an_unknown_strategy_is_refused(pool: Pool) -> None:
    with pytest.raises(ConfigurationError, match="is not one of enqueue, reject"):
        await Runs().start(pool, "run-1", "t-1", multitask="shove")


@pytest.mark.redis
async def test_the_thread_is_held_across_coordinator_processes(
    pools: Pools, redis_url: str
) -> None:
    one = await pools.open(Pool.from_url(redis_url, settings=FAST))
    other = await pools.open(Pool.from_url(redis_url, settings=FAST))
    runs = Runs()
    first = await runs.start(one, "run-1", "t-1")
    await started(runs, "run-1")

    with pytest.raises(ThreadBusy):
        await runs.start(other, "run-x", "t-1", multitask="reject")
    second = await runs.start(other, "run-2", "t-1")
    await asyncio.sleep(0.3)
    assert runs.log == ["start run-1"]
    runs.release["run-1"].set()
    runs.release["run-2"].set()

    assert (await first.result(10), await second.result(10)) == (b"run-1", b"run-2")
    assert runs.log == ["start run-1", "end run-1", "start run-2", "end run-2"]
