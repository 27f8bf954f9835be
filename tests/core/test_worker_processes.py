"""Worker processes die, live long tasks, and get stopped; no task is lost, none runs twice while
its worker lives, and each result reaches its coordinator once.

Worker processes are real children on the session's redis-server, started with the ``nervenet
worker`` CLI (fast heartbeats where reclaiming is tested, defaults for shutdown).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import core_apps
import orjson
import pytest
from core_apps import STARTED, pids_key, runs_key
from core_support import FAST, ReplyTap, WorkerProcesses, registered, wait_until

from nervenet import Pool, TaskEscalated
from nervenet.envelope import ReplyKind
from nervenet.testing import Child

pytestmark = pytest.mark.redis


async def next_start(pool: Pool, timeout: float = 15.0) -> dict[str, Any]:
    """Wait for the next execution of a recorded handler to start (see ``core_apps``)."""
    popped = await pool.transport.redis.blpop([STARTED], timeout=timeout)
    assert popped is not None, f"no task started within {timeout:g} s"
    started: dict[str, Any] = orjson.loads(popped[1])
    return started


async def runs(pool: Pool, key: str) -> int:
    return int(await pool.transport.redis.get(runs_key(key)) or 0)


async def pids(pool: Pool, key: str) -> list[int]:
    return [int(p) for p in await pool.transport.redis.lrange(pids_key(key), 0, -1)]


def slow(key: str, first: float, then: float = 0.05) -> bytes:
    return orjson.dumps({"key": key, "first": first, "then": then})


async def said(process: Child, text: str) -> bool:
    return text in process.output()


async def assert_stream_settled(pool: Pool, task_type: str) -> None:
    stream = pool.keys.task_stream(task_type)
    assert await pool.transport.redis.xlen(stream) == 0
    pending: Any = await pool.transport.redis.xpending(stream, "workers")
    assert pending["pending"] == 0


async def test_the_task_of_a_killed_worker_process_is_completed_by_another(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    tap = ReplyTap(redis_pool)
    for process in [worker_processes.cli(redis_url), worker_processes.cli(redis_url)]:
        await registered(redis_pool, process)
    dispatch = asyncio.ensure_future(
        redis_pool.dispatch(
            "core/slow", slow("killed", first=60), task_id="killed", timeout=30, retries=0
        )
    )

    first = await next_start(redis_pool)
    worker_processes.by_pid(first["pid"]).kill()
    result = orjson.loads(await asyncio.wait_for(dispatch, 30))

    assert result["run"] == 2
    assert await pids(redis_pool, "killed") == [first["pid"], result["pid"]]
    assert [r.kind for r in tap.of("killed")] == [ReplyKind.RESULT]
    assert redis_pool.inbox.unmatched_replies == 0
    await assert_stream_settled(redis_pool, "core/slow")


async def test_a_long_task_on_a_live_worker_is_not_taken_by_another(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    tap = ReplyTap(redis_pool)
    for process in [worker_processes.cli(redis_url), worker_processes.cli(redis_url)]:
        await registered(redis_pool, process)
    long = 3.5 * FAST.visibility_timeout

    result = await redis_pool.dispatch(
        "core/slow", slow("long", first=long), task_id="long", timeout=30, retries=0
    )

    assert orjson.loads(result)["run"] == 1
    assert await runs(redis_pool, "long") == 1
    assert len(tap.of("long")) == 1


async def test_a_task_that_keeps_killing_its_workers_is_escalated_not_run_again(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    for _ in range(2):
        worker = worker_processes.cli(redis_url, options=["--max-deliveries", "1"])
        await registered(redis_pool, worker)

    with pytest.raises(TaskEscalated) as caught:
        await redis_pool.dispatch(
            "core/crash", orjson.dumps({"key": "poison"}), task_id="poison", timeout=30
        )

    assert "started 1 time(s) (max_deliveries 1)" in caught.value.reason
    assert await runs(redis_pool, "poison") == 1
    [escalation] = await redis_pool.escalations.list()
    assert escalation.task_id == "poison"
    await assert_stream_settled(redis_pool, "core/crash")


async def test_pool_workers_lists_worker_processes_with_their_task_types(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    process = worker_processes.cli(redis_url, concurrency=3)
    worker_id = await registered(redis_pool, process)

    [info] = [w for w in await redis_pool.workers() if w.worker_id == worker_id]

    assert set(info.task_types) == set(core_apps.handlers.nervenet_handlers())
    assert info.concurrency == 3
    assert info.host.endswith(f":{process.pid}")


async def test_a_killed_worker_process_leaves_the_registry_after_its_ttl(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    process = worker_processes.cli(redis_url)
    worker_id = await registered(redis_pool, process)

    process.kill()

    async def gone() -> bool:
        return worker_id not in {w.worker_id for w in await redis_pool.workers()}

    await wait_until(gone, timeout=FAST.visibility_timeout + 2, what="the registration to expire")


# --- graceful shutdown of `nervenet worker` ----------------------------------------------------


async def test_sigterm_lets_the_in_flight_task_finish_and_the_worker_exit_zero(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    process = worker_processes.cli(redis_url, grace=10, fast=False)
    worker_id = await registered(redis_pool, process)
    dispatch = asyncio.ensure_future(
        redis_pool.dispatch("core/slow", slow("graceful", first=1.0), timeout=30, retries=0)
    )
    await next_start(redis_pool)

    process.send_signal(signal.SIGTERM)

    assert orjson.loads(await asyncio.wait_for(dispatch, 30))["run"] == 1
    assert await process.exit_code() == 0, process.output()
    assert "worker stopped after 1 task(s)" in process.output()
    assert worker_id not in {w.worker_id for w in await redis_pool.workers()}
    await assert_stream_settled(redis_pool, "core/slow")


async def running_on_one_of_two(
    pool: Pool,
    url: str,
    processes: WorkerProcesses,
    grace: float,
    task_type: str,
    payload: bytes,
    **options: Any,
) -> tuple[asyncio.Future[bytes], dict[str, Any], Child]:
    """Two worker processes with ``grace``; dispatch; return the dispatch, the start record of its
    first run, and the worker process running it."""
    for process in [processes.cli(url, grace=grace, fast=False) for _ in range(2)]:
        await registered(pool, process)
    dispatch = asyncio.ensure_future(pool.dispatch(task_type, payload, **options))
    first = await next_start(pool)
    return dispatch, first, processes.by_pid(first["pid"])


async def test_a_sync_task_that_outlasts_the_grace_period_is_waited_for_and_runs_once(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    dispatch, first, stopping = await running_on_one_of_two(
        redis_pool, redis_url, worker_processes, 0.3,
        "core/slow-sync", slow("in-a-thread", first=2.0), timeout=30,
    )  # fmt: skip

    stopping.send_signal(signal.SIGTERM)

    result = orjson.loads(await asyncio.wait_for(dispatch, 30))
    assert (result["run"], result["pid"]) == (1, first["pid"])  # finished where it started
    assert await stopping.exit_code() == 0, stopping.output()
    assert "cannot be interrupted" in stopping.output()
    assert "handed back task entry" not in stopping.output()
    await asyncio.sleep(0.5)  # a handed-back copy would have started by now
    assert await runs(redis_pool, "in-a-thread") == 1
    await assert_stream_settled(redis_pool, "core/slow-sync")


async def test_a_second_ctrl_c_hands_unfinished_tasks_back_at_once(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    dispatch, first, stopping = await running_on_one_of_two(
        redis_pool, redis_url, worker_processes, 60,
        "core/slow", slow("hurried", first=60), timeout=30, retries=0,
    )  # fmt: skip

    stopping.send_signal(signal.SIGINT)
    await wait_until(lambda: said(stopping, "Ctrl-C again"), what="the stopping notice")
    assert "1 task(s) in flight get 60 s to finish" in stopping.output()
    stopping.send_signal(signal.SIGINT)

    assert await stopping.exit_code() == 0, stopping.output()
    assert "handed back task entry" in stopping.output()
    result = orjson.loads(await asyncio.wait_for(dispatch, 30))
    assert result["run"] == 2 and result["pid"] != first["pid"]


async def test_sigterm_hands_back_a_task_that_outlasts_the_grace_period(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    tap = ReplyTap(redis_pool)
    dispatch, first, stopping = await running_on_one_of_two(
        redis_pool, redis_url, worker_processes, 0.3,
        "core/slow", slow("handback", first=60), task_id="handback", timeout=30, retries=0,
    )  # fmt: skip

    stopping.send_signal(signal.SIGTERM)

    assert await stopping.exit_code() == 0, stopping.output()
    assert "handed back task entry" in stopping.output()
    result = orjson.loads(await asyncio.wait_for(dispatch, 30))
    assert result["run"] == 2
    assert result["pid"] != first["pid"]
    assert len(tap.of("handback")) == 1
    await assert_stream_settled(redis_pool, "core/slow")
