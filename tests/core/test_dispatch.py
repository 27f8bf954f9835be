"""Dispatching: every workflow gets exactly its own result, errors come back as text, cached
results are not recomputed, and a dispatch nobody can serve fails fast. Each test runs on the
embedded pool and on a real redis-server (the ``pool`` fixture)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson
import pytest
from core_support import MakePool, ReplyTap, Serve, stream_totals, wait_until

from nervenet import (
    Backoff,
    Handlers,
    NoLiveWorker,
    Pool,
    RemoteTaskError,
    TaskContext,
    TaskEscalated,
    Worker,
)
from nervenet import inbox as inbox_module
from nervenet.envelope import ReplyKind, TaskEnvelope


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def echo_handlers(runs: list[TaskContext] | None = None) -> Handlers:
    handlers = Handlers()

    @handlers.task("core/echo")
    async def echo(value: Any, ctx: TaskContext) -> Any:
        if runs is not None:
            runs.append(ctx)
        await asyncio.sleep(random.random() * 0.005)  # finish out of order
        return {"value": value, "workflow": ctx.workflow_id}

    return handlers


async def test_each_of_1000_concurrent_workflows_gets_exactly_its_own_result(
    pool: Pool, serve: Serve
) -> None:
    tap = ReplyTap(pool)
    for _ in range(2):
        await serve(pool, echo_handlers(), concurrency=256)

    async def workflow(index: int) -> tuple[int, Any]:
        coordinator = pool.coordinator(f"wf-{index}")
        result = await coordinator.dispatch("core/echo", dumps({"n": index}), timeout=60)
        return index, orjson.loads(result)

    results = await asyncio.gather(*(workflow(i) for i in range(1000)))

    assert [r for i, r in results if r != {"value": {"n": i}, "workflow": f"wf-{i}"}] == []
    assert pool.inbox.waiting == 0
    assert pool.inbox.unmatched_replies == 0
    assert len(tap.replies) == 1000


async def test_a_handler_exception_comes_back_as_remote_task_error(
    pool: Pool, serve: Serve
) -> None:
    handlers = Handlers()

    @handlers.task("core/fail")
    async def fail_on_purpose(value: Any) -> None:
        raise ValueError(f"bad input {value}")

    await serve(pool, handlers)

    with pytest.raises(RemoteTaskError) as caught:
        await pool.dispatch("core/fail", dumps(42), timeout=10, escalate_errors=False)

    error = caught.value
    assert error.error_type == "builtins.ValueError"
    assert error.error_message == "bad input 42"
    assert "Traceback (most recent call last)" in error.remote_traceback
    assert "fail_on_purpose" in error.remote_traceback
    assert "ValueError: bad input 42" in error.remote_traceback
    assert "builtins.ValueError: bad input 42" in str(error)


async def test_a_handler_error_is_retried_then_escalated_with_the_error_as_cause(
    pool: Pool, serve: Serve
) -> None:
    attempts: list[int] = []
    handlers = Handlers()

    @handlers.task("core/fail")
    async def fail_on_purpose(value: Any, ctx: TaskContext) -> None:
        attempts.append(ctx.attempt)
        raise KeyError("missing")

    await serve(pool, handlers)

    with pytest.raises(TaskEscalated) as caught:
        await pool.dispatch(
            "core/fail", dumps(1), timeout=10, retries=2, backoff=Backoff(initial=0.01)
        )

    assert attempts == [1, 2, 3]
    assert isinstance(caught.value.__cause__, RemoteTaskError)
    assert caught.value.__cause__.error_type == "builtins.KeyError"


async def test_a_payload_function_is_called_for_each_publish_and_the_escalation(
    pool: Pool, serve: Serve
) -> None:
    received: list[Any] = []
    handlers = Handlers()

    @handlers.task("core/fail")
    async def fail_on_purpose(value: Any, ctx: TaskContext) -> None:
        received.append(value)
        raise KeyError("missing")

    await serve(pool, handlers)
    built: list[int] = []

    def payload() -> bytes:
        built.append(len(built) + 1)
        return dumps({"build": len(built)})

    with pytest.raises(TaskEscalated):
        await pool.dispatch("core/fail", payload, timeout=10, retries=1, backoff=Backoff(0.01))

    assert received == [{"build": 1}, {"build": 2}]  # each attempt got the payload made for it
    assert built == [1, 2, 3]  # the third is the escalation's, so it can be replayed
    [escalated] = await pool.escalations.list()
    assert orjson.loads(escalated.fields["task.payload"]) == {"build": 3}


async def test_a_task_whose_result_is_cached_is_answered_without_running_again(
    pool: Pool, serve: Serve
) -> None:
    runs: list[TaskContext] = []
    worker = await serve(pool, echo_handlers(runs))
    coordinator = pool.coordinator("wf-idempotent")

    first = await coordinator.dispatch("core/echo", dumps("once"), task_id="step-1", timeout=10)
    second = await coordinator.dispatch("core/echo", dumps("once"), task_id="step-1", timeout=10)

    assert first == second
    assert len(runs) == 1
    assert worker.answered_from_cache == 1
    assert await pool.transport.redis.get(pool.keys.result("step-1")) == first


async def test_the_cache_answers_even_another_coordinator_of_another_workflow(
    pool: Pool, serve: Serve
) -> None:
    runs: list[TaskContext] = []
    await serve(pool, echo_handlers(runs))

    await pool.coordinator("wf-a").dispatch("core/echo", dumps(1), task_id="shared", timeout=10)
    again = await pool.coordinator("wf-b").dispatch(
        "core/echo", dumps(1), task_id="shared", timeout=10
    )

    assert orjson.loads(again)["workflow"] == "wf-a"  # the work was done once, for wf-a
    assert len(runs) == 1


async def test_a_dispatch_nobody_serves_fails_fast_with_no_live_worker(
    pool: Pool, serve: Serve
) -> None:
    await serve(pool, echo_handlers())  # serves core/echo, not core/nobody
    started = time.monotonic()

    with pytest.raises(NoLiveWorker) as caught:
        await pool.dispatch("core/nobody", b"{}", timeout=10)

    assert time.monotonic() - started < 1.0
    assert caught.value.task_type == "core/nobody"
    message = str(caught.value)
    assert "no live worker serves task type 'core/nobody'" in message
    assert "nervenet worker" in message
    assert "wait_for_worker=True" in message
    assert await stream_totals(pool, "core/nobody") == (0, 0)


async def test_wait_for_worker_waits_until_a_worker_starts(pool: Pool, serve: Serve) -> None:
    dispatch = asyncio.ensure_future(
        pool.dispatch("core/echo", dumps("late"), timeout=10, wait_for_worker=True)
    )
    await asyncio.sleep(0.5)  # a dispatch that did not wait would have failed by now
    assert not dispatch.done()

    await serve(pool, echo_handlers())

    assert orjson.loads(await asyncio.wait_for(dispatch, 10))["value"] == "late"


async def test_wait_for_worker_gives_up_after_the_worker_wait_timeout(make_pool: MakePool) -> None:
    from core_support import FAST

    from nervenet import PoolSettings

    settings = PoolSettings(
        heartbeat_interval=FAST.heartbeat_interval,
        visibility_timeout=FAST.visibility_timeout,
        lease_ttl=FAST.lease_ttl,
        worker_wait_timeout=0.5,
    )
    pool = await make_pool(settings=settings)

    with pytest.raises(NoLiveWorker, match=r"waited 0\.5 s for one to register"):
        await pool.dispatch("core/nobody", b"{}", timeout=10, wait_for_worker=True)


async def test_a_late_error_of_an_old_attempt_is_not_taken_for_the_new_attempts_result(
    pool: Pool, serve: Serve
) -> None:
    tap = ReplyTap(pool)
    second_attempt_started = asyncio.Event()
    late_error_sent = asyncio.Event()
    handlers = Handlers()

    async def received_late_error() -> bool:
        return any(r.kind is ReplyKind.ERROR and r.attempt == 1 for r in tap.replies)

    @handlers.task("core/late")
    async def late(value: Any, ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            # Answer only once the coordinator has given up on this attempt and sent the next.
            await second_attempt_started.wait()
            late_error_sent.set()
            raise RuntimeError("attempt 1 failed late")
        second_attempt_started.set()
        await late_error_sent.wait()
        # Hold the result back until the coordinator has received attempt 1's error.
        await wait_until(received_late_error, timeout=5, what="attempt 1's error reply")
        return f"attempt {ctx.attempt} ok"

    await serve(pool, handlers)

    result = await pool.dispatch(
        "core/late",
        dumps(None),
        timeout=1.0,
        retries=1,
        backoff=Backoff(initial=0.01),
        escalate_errors=False,
    )

    assert orjson.loads(result) == "attempt 2 ok"
    assert [(r.attempt, r.kind) for r in tap.replies] == [
        (1, ReplyKind.ERROR),
        (2, ReplyKind.RESULT),
    ]


async def test_frames_reach_the_coordinator_in_order_before_the_result(
    pool: Pool, serve: Serve
) -> None:
    handlers = Handlers()

    @handlers.task("core/stream")
    async def stream(value: int, ctx: TaskContext) -> str:
        for i in range(value):
            ctx.emit(f"frame {i}".encode())
        return "done"

    await serve(pool, handlers)
    frames: list[bytes] = []

    result = await pool.dispatch("core/stream", dumps(50), timeout=10, on_frame=frames.append)

    assert orjson.loads(result) == "done"
    assert frames == [f"frame {i}".encode() for i in range(50)]


async def test_task_streams_are_empty_once_their_tasks_are_done(pool: Pool, serve: Serve) -> None:
    await serve(pool, echo_handlers())

    await asyncio.gather(*(pool.dispatch("core/echo", dumps(i), timeout=10) for i in range(200)))

    assert await stream_totals(pool, "core/echo") == (0, 0)


async def test_the_reply_stream_stays_bounded(make_pool: MakePool, serve: Serve) -> None:
    from core_support import FAST

    from nervenet import PoolSettings

    settings = PoolSettings(
        heartbeat_interval=FAST.heartbeat_interval,
        visibility_timeout=FAST.visibility_timeout,
        lease_ttl=FAST.lease_ttl,
        reply_stream_maxlen=100,
    )
    pool = await make_pool(settings=settings)
    await serve(pool, echo_handlers())

    for _ in range(5):
        await asyncio.gather(
            *(pool.dispatch("core/echo", dumps(i), timeout=10) for i in range(200))
        )

    # Trimming is approximate (whole radix-tree nodes of up to 100 entries), never unbounded.
    assert await pool.transport.redis.xlen(pool.inbox.address) <= 300  # 1,001 untrimmed


# --- the result-cache lookup --------------------------------------------------------------------


def record_lookups(worker: Worker) -> list[list[str]]:
    """Every result-cache lookup ``worker`` makes, as the task ids it looked up."""
    lookups: list[list[str]] = []
    look_up = worker._cached_results

    async def recording(task_ids: list[str]) -> list[Any]:
        lookups.append(list(task_ids))
        return await look_up(task_ids)

    worker._cached_results = recording  # type: ignore[method-assign]
    return lookups


async def test_a_dispatch_without_task_id_is_run_without_a_result_cache_lookup(
    pool: Pool, serve: Serve
) -> None:
    worker = await serve(pool, echo_handlers())
    lookups = record_lookups(worker)

    await asyncio.gather(*(pool.dispatch("core/echo", dumps(i), timeout=10) for i in range(20)))

    assert lookups == []
    assert worker.processed == 20


async def test_a_deterministic_task_id_is_always_looked_up(pool: Pool, serve: Serve) -> None:
    worker = await serve(pool, echo_handlers())
    lookups = record_lookups(worker)

    await pool.dispatch("core/echo", dumps(1), task_id="step-1", timeout=10)

    assert lookups == [["step-1"]]


async def test_a_deterministic_task_id_on_its_first_run_is_not_looked_up(
    pool: Pool, serve: Serve
) -> None:
    """``first_run``: the caller knows the step never ran (a LangGraph step not resumed)."""
    worker = await serve(pool, echo_handlers())
    lookups = record_lookups(worker)

    await pool.dispatch("core/echo", dumps(1), task_id="step-1", timeout=10, first_run=True)
    await pool.dispatch("core/echo", dumps(1), task_id="step-1", timeout=10)  # a resumed step

    assert lookups == [["step-1"]]
    assert (worker.processed, worker.answered_from_cache) == (1, 1)


def fresh_envelope(pool: Pool, attempt: int) -> TaskEnvelope:
    return TaskEnvelope(
        "fresh-id", "wf", "core/echo", attempt, 0.0, pool.inbox.address, b'"x"', fresh=True
    )


async def test_a_later_attempt_of_a_fresh_task_id_is_answered_from_the_cache(
    pool: Pool, serve: Serve
) -> None:
    worker = await serve(pool, echo_handlers())
    await pool.transport.redis.set(pool.keys.result("fresh-id"), b'"cached"')

    await pool.publish(fresh_envelope(pool, attempt=2))

    await wait_until(lambda: _value(worker.answered_from_cache), what="the cached answer")
    assert worker.processed == 0


async def test_a_redelivered_fresh_task_is_answered_from_the_cache(
    pool: Pool, serve: Serve
) -> None:
    """A worker that died after caching the result but before acknowledging the entry."""
    redis = pool.transport.redis
    stream = pool.keys.task_stream_for("core/echo", "fresh-id")
    await redis.xgroup_create(stream, "workers", id="0", mkstream=True)
    await pool.publish(fresh_envelope(pool, attempt=1))
    await redis.xreadgroup("workers", "dead-worker", {stream: ">"}, count=1)
    await redis.set(pool.keys.result("fresh-id"), b'"cached"')

    worker = await serve(pool, echo_handlers())

    await wait_until(lambda: _value(worker.answered_from_cache), what="the reclaimed entry")
    assert worker.processed == 0
    assert worker.reclaimed == 1


async def _value(value: Any) -> Any:
    return value


async def test_a_process_has_one_reply_stream_per_primary_each_on_its_own_shard(
    pool: Pool, serve: Serve
) -> None:
    streams = pool.inbox.addresses
    transport: Any = pool.transport
    assert len(streams) == (transport.primaries if transport.is_cluster else 1)
    if transport.is_cluster:
        shards = {transport.redis.get_node_from_key(s).name for s in streams}
        assert len(shards) == transport.primaries
    await serve(pool, echo_handlers())

    results = await asyncio.gather(
        *(pool.dispatch("core/echo", dumps(i), task_id=f"t{i}", timeout=10) for i in range(30))
    )

    assert [orjson.loads(r)["value"] for r in results] == list(range(30))
    assert {pool.inbox.address_for(f"t{i}") for i in range(30)} == set(streams)
    assert all(pool.keys.is_reply_stream(s) for s in streams)


async def test_a_reply_reader_with_nobody_waiting_reads_again_after_the_next_task_went_out(
    pool: Pool, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between two nodes of a graph nobody waits for a reply: the read re-sent at once was a
    # socket write in the middle of LangGraph's step. It now waits for the next dispatch and
    # goes out after its task (or QUIET_READ_DELAY later, made long here to see the order).
    monkeypatch.setattr(inbox_module, "QUIET_READ_DELAY", 30.0)
    await serve(pool, echo_handlers())
    writes: list[str] = []
    read, execute = pool.transport.read, pool.batcher._execute_pipeline

    async def reading(streams: dict[str, str], *args: Any, **kwargs: Any) -> Any:
        if any(pool.keys.is_reply_stream(s) for s in streams):
            writes.append("reply read")
        return await read(streams, *args, **kwargs)

    async def executing(pipe: Any) -> list[Any]:
        writes.append("pipeline")
        return await execute(pipe)

    monkeypatch.setattr(pool.transport, "read", reading)
    monkeypatch.setattr(pool.batcher, "_execute_pipeline", executing)
    await pool.dispatch("core/echo", dumps(1), timeout=10)
    await pool.dispatch("core/echo", dumps(2), timeout=10)  # the reader now runs on `reading`
    # The in-process worker's settlement may still be out (its replies can come after the
    # reply read's): a pipeline out makes the next one wait, and the read would go first.
    await pool.batcher.drain(timeout=10)

    writes.clear()
    for _ in range(20):  # a graph's step between two nodes: loop iterations, no reply to read
        await asyncio.sleep(0)
    assert writes == []
    answer = await pool.dispatch("core/echo", dumps(3), timeout=10)

    assert orjson.loads(answer)["value"] == 3
    assert writes[:2] == ["pipeline", "reply read"]
