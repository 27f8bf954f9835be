"""``nervenet runs list|show|cancel`` as an operator runs them (child processes)."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from core_support import Serve, run_cli

from nervenet import Handlers, Pool, RunStatus, TaskEscalated

pytestmark = pytest.mark.redis


def handlers() -> Handlers:
    h = Handlers()

    @h.task("cli/ok")
    async def ok(value: Any) -> Any:
        return value

    @h.task("cli/boom")
    async def boom(value: Any) -> Any:
        raise RuntimeError("[bold red]markup from an error[/]")

    return h


async def finished_run(pool: Pool, run_id: str, task_type: str) -> None:
    coordinator = pool.coordinator(run_id)

    async def body() -> bytes:
        return await coordinator.dispatch(task_type, b"1", task_id=f"{run_id}/0", retries=0)

    handle = await pool.workflows.start("cli/app", run_id, b"", body)
    with contextlib.suppress(TaskEscalated):  # the failing one
        await handle.result(timeout=10)


async def test_list_filters_and_show_prints_the_node_history(
    redis_pool: Pool, redis_url: str, serve: Serve
) -> None:
    worker = await serve(redis_pool, handlers())
    await finished_run(redis_pool, "run-ok", "cli/ok")
    await finished_run(redis_pool, "run-bad", "cli/boom")
    await redis_pool.workflows.enqueue("cli/app", "run-queued", b"")

    everything = await run_cli("runs", "list", "--redis", redis_url)
    failed = await run_cli("runs", "list", "--status", "failed", "--redis", redis_url)
    shown = await run_cli("runs", "show", "run-bad", "--redis", redis_url)

    assert everything.returncode == 0, everything.output
    assert re.findall(r"run-\w+", everything.output) == [
        "run-queued",
        "run-bad",
        "run-ok",
    ]
    assert re.findall(r"run-\w+", failed.output) == ["run-bad"]
    assert shown.returncode == 0, shown.output
    assert "status:   failed" in shown.output
    assert "[bold red]markup from an error[/]" in shown.output  # printed, never interpreted
    assert re.search(rf"cli/boom\s*[│|]\s*1\s*[│|]\s*{re.escape(worker.worker_id)}", shown.output)


async def test_cancel_takes_a_queued_run_off_and_refuses_a_finished_one(
    redis_pool: Pool, redis_url: str, serve: Serve
) -> None:
    await serve(redis_pool, handlers())
    await finished_run(redis_pool, "run-ok", "cli/ok")
    await redis_pool.workflows.enqueue("cli/app", "run-queued", b"")

    cancelled = await run_cli("runs", "cancel", "run-queued", "--redis", redis_url)
    refused = await run_cli("runs", "cancel", "run-ok", "--redis", redis_url)

    assert cancelled.returncode == 0, cancelled.output
    assert "run run-queued cancelled (interrupt)" in cancelled.output
    assert (await redis_pool.runs.get("run-queued")).status is RunStatus.INTERRUPTED
    assert refused.returncode == 2
    assert "already ended (succeeded); nothing to cancel" in refused.output
    assert (await redis_pool.runs.get("run-ok")).status is RunStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nobody"], "no run 'nobody'"),
        (["cancel", "nobody"], "no run 'nobody'"),
        (["list", "--status", "sleeping"], "unknown status 'sleeping'"),
        (["list", "--newer-than", "soon"], "is not an age like 90s"),
    ],
)
async def test_bad_input_gets_a_clear_answer(redis_url: str, args: list[str], message: str) -> None:
    answered = await run_cli("runs", *args, "--redis", redis_url)

    assert answered.returncode == 2, answered.output
    assert message in answered.output
    assert "Traceback" not in answered.output


async def test_a_running_run_without_a_live_owner_is_flagged(
    redis_pool: Pool, redis_url: str
) -> None:
    async with redis_pool.transport.redis.pipeline(transaction=False) as pipe:
        redis_pool.runs.add_begin(pipe, "run-ghost", "cli/app", status=RunStatus.RUNNING)
        await pipe.execute()
    redis_pool.runs.recorded.discard("run-ghost")  # a record left by a process that died

    listed = await run_cli("runs", "list", "--redis", redis_url)

    assert re.search(r"run-ghost.*running.*\(not alive\)", listed.output), listed.output
