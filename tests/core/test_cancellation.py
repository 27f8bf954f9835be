"""Cancelling a dispatch cancels the work: the coordinator withdraws the task entry and tells the
worker holding it, whose handler sees ``asyncio.CancelledError``; the worker confirms that the
handler stopped, and the cancelled dispatch returns only then (as awaiting a cancelled asyncio
task does); nothing is cached.
A handler that raises ``CancelledError`` itself is a handler error, not a cancellation. Runs on
both backends."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from core_support import ReplyTap, Serve, register_silent_worker, stream_totals, wait_until

from nervenet import Handlers, Pool, RemoteTaskError, TaskContext
from nervenet.envelope import CancelRequest, ReplyKind, TaskEnvelope

#: How soon a cancellation must reach a running handler with the tests' settings.
REACHES_WITHIN = 1.0


class Gate:
    """A handler ``core/hold`` that waits until opened, recording how each run ended."""

    def __init__(self) -> None:
        self.started: list[TaskContext] = []
        self.cancelled: list[str] = []
        self.finalized: list[str] = []
        self.open = asyncio.Event()
        self.handlers = Handlers()

        @self.handlers.task("core/hold")
        async def hold(value: Any, ctx: TaskContext) -> Any:
            self.started.append(ctx)
            try:
                await self.open.wait()
            except asyncio.CancelledError:
                self.cancelled.append(ctx.task_id)
                raise
            finally:
                self.finalized.append(ctx.task_id)
            return {"done": value}

    async def wait_started(self, count: int = 1) -> None:
        async def started() -> bool:
            return len(self.started) >= count

        await wait_until(started, timeout=10, what=f"{count} handler run(s) to start")


async def assert_settled(pool: Pool, task_type: str = "core/hold") -> None:
    async def settled() -> bool:
        return await stream_totals(pool, task_type) == (0, 0)

    await wait_until(settled, timeout=5, what=f"{task_type}'s streams to hold nothing pending")


async def test_cancelling_a_dispatch_cancels_its_running_handler(pool: Pool, serve: Serve) -> None:
    gate = Gate()
    worker = await serve(pool, gate.handlers)
    tap = ReplyTap(pool)
    dispatch = asyncio.ensure_future(pool.dispatch("core/hold", b"1", task_id="held"))
    await gate.wait_started()

    dispatch.cancel()
    cancelled_at = time.monotonic()

    async def handler_cancelled() -> bool:
        return gate.cancelled == ["held"] and gate.finalized == ["held"]

    await wait_until(handler_cancelled, timeout=5, what="the handler to see CancelledError")
    assert time.monotonic() - cancelled_at < REACHES_WITHIN
    with pytest.raises(asyncio.CancelledError):
        await dispatch
    await assert_settled(pool)
    assert worker.cancelled == 1
    assert worker.processed == 0
    assert [r.kind for r in tap.of("held")] == [ReplyKind.CANCELLED]
    assert await pool.transport.redis.exists(pool.keys.result("held")) == 0


@pytest.mark.parametrize("cancels", [1, 2])
async def test_cancelling_a_dispatch_awaited_from_another_event_loop_cancels_the_handler(
    pool: Pool, serve: Serve, cancels: int
) -> None:
    """The pool's loop runs the dispatch for a caller on another loop; the caller's await ends
    once the handler's ``finally`` ran, even if it is cancelled again meanwhile (as LangGraph's
    runner does to a failed step's siblings)."""
    gate = Gate()
    await serve(pool, gate.handlers)
    finalized_when_it_returned: list[str] = []

    async def dispatch_and_cancel_there() -> None:
        far = asyncio.ensure_future(
            pool.on_home(lambda: pool.dispatch("core/hold", b"1", task_id="far"))
        )
        while not gate.started:
            await asyncio.sleep(0.01)
        for _ in range(cancels):
            far.cancel()
            await asyncio.sleep(0)
        with contextlib.suppress(asyncio.CancelledError):
            await far
        finalized_when_it_returned.extend(gate.finalized)

    await asyncio.wait_for(asyncio.to_thread(asyncio.run, dispatch_and_cancel_there()), 10)

    assert finalized_when_it_returned == ["far"]
    assert gate.cancelled == ["far"]
    await assert_settled(pool)


async def test_a_cancelled_dispatch_returns_after_the_handler_stopped(
    pool: Pool, serve: Serve
) -> None:
    """``wait_for`` around a dispatch returns once the handler's ``except``/``finally`` ran on
    the worker, not merely once the cancellation was sent (LangGraph's own tests rely on it)."""
    gate = Gate()
    await serve(pool, gate.handlers)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.dispatch("core/hold", b"1", task_id="timed"), 0.5)

    assert gate.cancelled == ["timed"]
    assert gate.finalized == ["timed"]


async def test_a_dispatch_cancelled_twice_still_returns_after_the_handler_stopped(
    pool: Pool, serve: Serve
) -> None:
    """LangGraph's runner cancels a failed superstep's other tasks, then cancels them again on
    leaving its executor: the second cancellation must not cut the wait for the worker short."""
    gate = Gate()
    await serve(pool, gate.handlers)
    dispatch = asyncio.ensure_future(pool.dispatch("core/hold", b"1", task_id="twice"))
    await gate.wait_started()

    dispatch.cancel()
    await asyncio.sleep(0)
    dispatch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dispatch

    assert gate.finalized == ["twice"]


async def test_a_cancelled_dispatch_waits_for_no_confirmation_of_an_unread_entry(
    pool: Pool,
) -> None:
    """No worker read the entry: the withdrawal alone settles it, at once."""
    await register_silent_worker(pool, "core/hold")
    dispatch = asyncio.ensure_future(pool.dispatch("core/hold", b"1", task_id="unread"))
    await asyncio.sleep(0.3)

    dispatch.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await dispatch
    assert time.monotonic() - cancelled_at < pool.settings.cancel_wait / 2


async def test_a_caller_timeout_around_a_dispatch_cancels_the_handler(
    pool: Pool, serve: Serve
) -> None:
    gate = Gate()
    await serve(pool, gate.handlers)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.dispatch("core/hold", b"1", task_id="timed-out"), 0.5)

    async def handler_cancelled() -> bool:
        return gate.cancelled == ["timed-out"]

    await wait_until(handler_cancelled, timeout=REACHES_WITHIN, what="the handler's cancellation")
    await assert_settled(pool)


async def test_a_cancelled_deterministic_task_runs_again_when_dispatched_again(
    pool: Pool, serve: Serve
) -> None:
    gate = Gate()
    await serve(pool, gate.handlers)
    first = asyncio.ensure_future(pool.dispatch("core/hold", b"1", task_id="step-1"))
    await gate.wait_started()
    first.cancel()
    await wait_until(holds(lambda: gate.cancelled), what="the first run's cancellation")

    gate.open.set()
    again = await pool.dispatch("core/hold", b"2", task_id="step-1", timeout=10)

    assert orjson.loads(again) == {"done": 2}  # run again, not answered from a cache
    assert [ctx.task_id for ctx in gate.started] == ["step-1", "step-1"]


async def test_a_task_cancelled_before_any_worker_read_it_never_runs(
    pool: Pool, serve: Serve
) -> None:
    gate = Gate()
    worker = await serve(pool, gate.handlers, concurrency=1)
    busy = asyncio.ensure_future(pool.dispatch("core/hold", b"1", task_id="busy"))
    await gate.wait_started()
    waiting = asyncio.ensure_future(pool.dispatch("core/hold", b"2", task_id="queued"))

    async def entries(count: int) -> bool:
        return (await stream_totals(pool, "core/hold"))[0] == count

    await wait_until(lambda: entries(2), what="the busy entry and the queued one")

    waiting.cancel()

    await wait_until(lambda: entries(1), what="the queued entry's withdrawal")
    gate.open.set()

    assert orjson.loads(await asyncio.wait_for(busy, 10)) == {"done": 1}
    await assert_settled(pool)
    assert [ctx.task_id for ctx in gate.started] == ["busy"]
    assert worker.cancelled == 0  # withdrawn from the stream, never delivered


async def test_a_cancellation_that_overtakes_its_entry_drops_the_entry_unrun(
    pool: Pool, serve: Serve
) -> None:
    """The cancel stream and the task stream are read on two connections: a worker may see the
    cancellation of an entry before its own read of that entry reaches it."""
    gate = Gate()
    worker = await serve(pool, gate.handlers, concurrency=1)
    busy = asyncio.ensure_future(pool.dispatch("core/hold", b"1", task_id="busy"))
    await gate.wait_started()
    envelope = TaskEnvelope("overtaken", "wf", "core/hold", 1, 0.0, pool.inbox.address, b"2")
    entry_id = await pool.publish(envelope)
    await pool.transport.redis.xadd(  # the cancellation alone, without withdrawing the entry
        pool.keys.cancel_stream(pool.keys.task_stream_for("core/hold", "overtaken")),
        CancelRequest(entry_id.decode(), "overtaken", 1).to_fields(),  # type: ignore[arg-type]
    )
    pool.transport.notify_written()
    await wait_until(holds(lambda: worker._early_cancels), what="the worker to see it")

    gate.open.set()

    await asyncio.wait_for(busy, 10)
    await assert_settled(pool)
    assert [ctx.task_id for ctx in gate.started] == ["busy"]
    assert worker.cancelled == 1


async def test_a_cancellation_after_the_task_finished_changes_nothing(
    pool: Pool, serve: Serve
) -> None:
    gate = Gate()
    gate.open.set()
    worker = await serve(pool, gate.handlers)
    envelope = TaskEnvelope("finished", "wf", "core/hold", 1, 0.0, pool.inbox.address, b"3")
    entry_id = await pool.publish(envelope)
    result_key = pool.keys.result("finished")
    await wait_until(lambda: pool.transport.redis.get(result_key), what="the cached result")

    pool.cancel_soon(envelope, entry_id)
    await asyncio.sleep(0.3)

    cached = await pool.transport.redis.get(result_key)
    assert cached is not None
    assert orjson.loads(cached) == {"done": 3}
    again = await pool.dispatch("core/hold", b"3", task_id="finished", timeout=10)
    assert orjson.loads(again) == {"done": 3}
    assert worker.cancelled == 0
    assert worker.answered_from_cache == 1
    await assert_settled(pool)


async def test_a_handler_that_raises_cancelled_error_itself_fails_its_dispatch(
    pool: Pool, serve: Serve
) -> None:
    handlers = Handlers()

    @handlers.task("core/give-up")
    async def give_up(value: Any) -> None:
        raise asyncio.CancelledError("the handler gave up")

    worker = await serve(pool, handlers)

    with pytest.raises(RemoteTaskError) as caught:
        await asyncio.wait_for(pool.dispatch("core/give-up", b"1", escalate_errors=False), 10)

    assert caught.value.error_type == "asyncio.exceptions.CancelledError"
    assert caught.value.error_message == "the handler gave up"
    assert worker.cancelled == 0
    await assert_settled(pool, "core/give-up")


async def test_a_handler_swallowing_the_cancellation_gets_no_result_nor_cache_entry(
    pool: Pool, serve: Serve
) -> None:
    handlers = Handlers()
    started = asyncio.Event()

    @handlers.task("core/stubborn")
    async def stubborn(value: Any) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "partial"
        return "complete"

    worker = await serve(pool, handlers)
    tap = ReplyTap(pool)
    dispatch = asyncio.ensure_future(pool.dispatch("core/stubborn", b"1", task_id="stubborn"))
    await asyncio.wait_for(started.wait(), 10)

    dispatch.cancel()

    await wait_until(holds(lambda: worker.cancelled), what="the worker to drop the task")
    await assert_settled(pool, "core/stubborn")
    assert [r.kind for r in tap.of("stubborn")] == [ReplyKind.CANCELLED]
    assert await pool.transport.redis.exists(pool.keys.result("stubborn")) == 0


async def test_a_sync_handler_cannot_be_interrupted_but_its_dispatch_is_released(
    pool: Pool, serve: Serve
) -> None:
    handlers = Handlers()
    release = threading.Event()
    finished = threading.Event()

    @handlers.task("core/blocking")
    def blocking(value: Any) -> str:
        release.wait(10)
        finished.set()
        return "late"

    worker = await serve(pool, handlers)
    dispatch = asyncio.ensure_future(pool.dispatch("core/blocking", b"1", task_id="blocking"))
    await wait_until(holds(lambda: worker.load), what="the task to start")

    dispatch.cancel()

    await wait_until(holds(lambda: worker.cancelled), what="the worker to drop the task")
    assert not finished.is_set()  # the thread still runs
    release.set()
    await asyncio.to_thread(finished.wait, 10)
    await asyncio.sleep(0.2)
    assert await pool.transport.redis.exists(pool.keys.result("blocking")) == 0
    await assert_settled(pool, "core/blocking")


def holds(check: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """``check`` (a plain condition) in the form :func:`wait_until` polls."""

    async def condition() -> Any:
        return check()

    return condition
