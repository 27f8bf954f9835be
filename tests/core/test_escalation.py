"""Timeouts are retried with backoff and then escalated; an operator sees the escalation in the
stream and through ``nervenet escalations``, and can retry it (a worker then completes it) or drop
it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from core_support import Serve, run_cli, wait_until

from nervenet import Backoff, Handlers, Pool, TaskContext, TaskEscalated


class Hanging:
    """``core/hang``: attempts up to ``hang_until`` never answer; later ones do."""

    def __init__(self, hang_until: int = 1_000) -> None:
        self.hang_until = hang_until
        self.started: list[tuple[int, float]] = []
        self.handlers = Handlers()

        @self.handlers.task("core/hang")
        async def hang(value: Any, ctx: TaskContext) -> Any:
            self.started.append((ctx.attempt, time.monotonic()))
            if ctx.attempt <= self.hang_until:
                await asyncio.sleep(3600)
            return {"value": value, "attempt": ctx.attempt}

    @property
    def attempts(self) -> list[int]:
        return [attempt for attempt, _ in self.started]


async def escalate(pool: Pool, task_id: str, *, retries: int = 0) -> TaskEscalated:
    with pytest.raises(TaskEscalated) as caught:
        await pool.coordinator("wf-escalated").dispatch(
            "core/hang", b'"x"', task_id=task_id, timeout=0.2, retries=retries
        )
    return caught.value


async def test_a_task_that_never_answers_is_retried_with_backoff_then_escalated(
    pool: Pool, serve: Serve
) -> None:
    hanging = Hanging()
    await serve(pool, hanging.handlers)

    with pytest.raises(TaskEscalated) as caught:
        await pool.coordinator("wf-1").dispatch(
            "core/hang",
            b"{}",
            task_id="never",
            timeout=0.3,
            retries=2,
            backoff=Backoff(initial=0.2, multiplier=2.0, jitter=False),
        )

    assert hanging.attempts == [1, 2, 3]
    (_, t1), (_, t2), (_, t3) = hanging.started
    assert t2 - t1 >= 0.3 + 0.2 - 0.05  # attempt timeout, then the first pause
    assert t3 - t2 >= 0.3 + 0.4 - 0.05  # the pause doubles
    assert caught.value.task_id == "never"
    assert "no result after 3 attempt(s)" in caught.value.reason
    assert "nervenet escalations list" in str(caught.value)


async def test_an_escalated_task_is_on_the_escalation_stream(pool: Pool, serve: Serve) -> None:
    await serve(pool, Hanging().handlers)

    await escalate(pool, "stuck-1", retries=1)

    [escalation] = await pool.escalations.list()
    assert escalation.task_id == "stuck-1"
    assert escalation.task_type == "core/hang"
    assert escalation.workflow_id == "wf-escalated"
    assert escalation.source == pool.keys.task_stream_for("core/hang", "stuck-1")
    assert "no result after 2 attempt(s)" in escalation.reason
    assert "gave no result within 0.2 s" in escalation.error
    assert escalation.fields["task.attempt"] == b"2"
    assert escalation.fields["task.payload"] == b'"x"'
    assert await pool.escalations.count() == 1


async def test_retrying_an_escalation_requeues_it_and_a_worker_completes_it(
    pool: Pool, serve: Serve
) -> None:
    hanging = Hanging(hang_until=1)
    await serve(pool, hanging.handlers)
    await escalate(pool, "stuck-2")
    [escalation] = await pool.escalations.list()

    await pool.escalations.retry(escalation.entry_id)

    result: bytes | str = await wait_until(
        lambda: pool.transport.redis.get(pool.keys.result("stuck-2")), what="the cached result"
    )
    assert orjson.loads(result) == {"value": "x", "attempt": 2}
    assert await pool.escalations.count() == 0
    assert hanging.attempts == [1, 2]


async def test_dropping_an_escalation_removes_it(pool: Pool, serve: Serve) -> None:
    await serve(pool, Hanging().handlers)
    await escalate(pool, "stuck-3")
    [escalation] = await pool.escalations.list()

    assert await pool.escalations.drop(escalation.entry_id) is True

    assert await pool.escalations.list() == []
    assert await pool.escalations.drop(escalation.entry_id) is False


# --- the same through the CLI, in a child process, on the real server -------------------------


@pytest.mark.redis
async def test_cli_escalations_list_shows_the_escalation(
    redis_pool: Pool, redis_url: str, serve: Serve
) -> None:
    await serve(redis_pool, Hanging().handlers)
    await escalate(redis_pool, "stuck-cli-1")
    [escalation] = await redis_pool.escalations.list()

    listed = await run_cli("escalations", "list", "--redis", redis_url)

    assert listed.returncode == 0, listed.output
    assert escalation.entry_id in listed.output
    assert "stuck-cli-1" in listed.output
    assert "core/hang" in listed.output
    assert "no result after 1 attempt(s)" in listed.output


@pytest.mark.redis
async def test_cli_escalations_show_prints_the_task_fields(
    redis_pool: Pool, redis_url: str, serve: Serve
) -> None:
    await serve(redis_pool, Hanging().handlers)
    await escalate(redis_pool, "stuck-cli-2")
    [escalation] = await redis_pool.escalations.list()

    shown = await run_cli("escalations", "show", escalation.entry_id, "--redis", redis_url)

    assert shown.returncode == 0, shown.output
    assert "task.id: stuck-cli-2" in shown.output
    assert 'task.payload: "x"' in shown.output


@pytest.mark.redis
async def test_cli_escalations_retry_requeues_it_and_a_worker_completes_it(
    redis_pool: Pool, redis_url: str, serve: Serve
) -> None:
    hanging = Hanging(hang_until=1)
    await serve(redis_pool, hanging.handlers)
    await escalate(redis_pool, "stuck-cli-3")
    [escalation] = await redis_pool.escalations.list()

    retried = await run_cli("escalations", "retry", escalation.entry_id, "--redis", redis_url)

    assert retried.returncode == 0, retried.output
    assert "requeued as" in retried.output
    result: bytes | str = await wait_until(
        lambda: redis_pool.transport.redis.get(redis_pool.keys.result("stuck-cli-3")),
        what="the cached result",
    )
    assert orjson.loads(result) == {"value": "x", "attempt": 2}
    assert await redis_pool.escalations.count() == 0


@pytest.mark.redis
async def test_cli_escalations_drop_removes_it(
    redis_pool: Pool, redis_url: str, serve: Serve
) -> None:
    await serve(redis_pool, Hanging().handlers)
    await escalate(redis_pool, "stuck-cli-4")
    [escalation] = await redis_pool.escalations.list()

    dropped = await run_cli("escalations", "drop", escalation.entry_id, "--redis", redis_url)

    assert dropped.returncode == 0, dropped.output
    assert "dropped" in dropped.output
    assert await redis_pool.escalations.count() == 0
    listed = await run_cli("escalations", "list", "--redis", redis_url)
    assert escalation.entry_id not in listed.output


@pytest.mark.redis
async def test_cli_escalations_retry_of_an_unknown_id_says_so(redis_url: str) -> None:
    retried = await run_cli("escalations", "retry", "1-1", "--redis", redis_url)

    assert retried.returncode == 2
    assert "no escalation '1-1'" in retried.output
    assert "Traceback" not in retried.output
