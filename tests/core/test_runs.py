"""Run records: every durable run's status, owner, times and node history, readable from any
process, bounded in Redis, and refused clearly for unknown or garbage run ids."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from typing import Any

import pytest
from core_support import MakePool, Serve

from nervenet import ConfigurationError, Handlers, Pool, RunStatus, TaskEscalated


def handlers() -> Handlers:
    h = Handlers()

    @h.task("runs/nap")
    async def nap(value: Any) -> Any:
        await asyncio.sleep(0.05)
        return value

    @h.task("runs/fail")
    async def fail(value: Any) -> Any:
        raise ValueError("the model refused <script>")

    return h


async def run_nodes(pool: Any, run_id: str, *task_types: str) -> None:
    """A durable run whose body dispatches one task per type, in order."""
    coordinator = pool.coordinator(run_id)

    async def body() -> bytes:
        for i, task_type in enumerate(task_types):
            await coordinator.dispatch(task_type, b"1", task_id=f"{run_id}/{i}", retries=0)
        return b"done"

    handle = await pool.workflows.start("runs/app", run_id, b"", body)
    fails = "runs/fail" in task_types
    with pytest.raises(TaskEscalated) if fails else contextlib.nullcontext():
        await handle.result(timeout=20)


async def test_a_finished_run_has_status_owner_times_and_node_history(
    pool: Pool, serve: Serve
) -> None:
    worker = await serve(pool, handlers())
    before = time.time()

    await run_nodes(pool, "run-ok", "runs/nap", "runs/nap")

    run = await pool.runs.get("run-ok")
    assert (run.status, run.kind, run.owner) == (RunStatus.SUCCEEDED, "runs/app", pool.process_id)
    assert before <= run.started_at <= run.ended_at <= time.time()
    assert [(n.task_type, n.task_id, n.worker, n.outcome) for n in run.nodes] == [
        ("runs/nap", "run-ok/0", worker.worker_id, "ok"),
        ("runs/nap", "run-ok/1", worker.worker_id, "ok"),
    ]
    assert all(n.run_ms >= 40 and 0 <= n.queue_wait_ms < 5_000 for n in run.nodes)


async def test_a_failed_run_keeps_its_error_and_the_nodes_error(pool: Pool, serve: Serve) -> None:
    await serve(pool, handlers())

    await run_nodes(pool, "run-bad", "runs/nap", "runs/fail")

    run = await pool.runs.get("run-bad")
    assert run.status is RunStatus.FAILED
    assert "the model refused <script>" in run.error
    assert [(n.outcome, n.error) for n in run.nodes] == [
        ("ok", ""),
        ("error", "the model refused <script>"),
    ]


async def test_a_queued_run_is_pending_without_an_owner(pool: Pool) -> None:
    await pool.workflows.enqueue("runs/app", "run-queued", b"")

    run = await pool.runs.get("run-queued")

    assert (run.status, run.owner, run.started_at) == (RunStatus.PENDING, "", 0.0)


async def test_list_filters_by_status_kind_and_age_newest_first(pool: Pool, serve: Serve) -> None:
    await serve(pool, handlers())
    await run_nodes(pool, "run-1", "runs/nap")
    await run_nodes(pool, "run-2", "runs/fail")
    await pool.workflows.enqueue("runs/other", "run-3", b"")

    newest_first = [r.run_id for r in await pool.runs.list()]
    failed = [r.run_id for r in await pool.runs.list(status="failed")]
    other = [r.run_id for r in await pool.runs.list(kind="runs/other")]
    recent = await pool.runs.list(newer_than=60)
    ancient = await pool.runs.list(newer_than=0.000_001)

    assert newest_first == ["run-3", "run-2", "run-1"]
    assert (failed, other) == (["run-2"], ["run-3"])
    assert len(recent) == 3 and ancient == []
    assert [r.nodes for r in recent] == [[], [], []]  # listing reads no history


async def test_records_expire_and_the_list_keeps_only_the_newest(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool()
    pool.settings = replace(pool.settings, runs_kept=2, run_retention=60)
    await serve(pool, handlers())
    for i in range(3):
        await run_nodes(pool, f"run-{i}", "runs/nap")

    listed = [r.run_id for r in await pool.runs.list()]
    redis = pool.transport.redis
    ttls = [await redis.ttl(k) for k in (pool.keys.run("run-2"), pool.keys.run_nodes("run-2"))]

    assert listed == ["run-2", "run-1"]
    assert all(0 < ttl <= 60 for ttl in ttls)


async def test_dispatches_outside_recorded_runs_write_no_history(pool: Pool, serve: Serve) -> None:
    await serve(pool, handlers())

    await pool.coordinator("not-a-run").dispatch("runs/nap", b"1", timeout=10)

    assert not await pool.transport.redis.exists(pool.keys.run_nodes("not-a-run"))


@pytest.mark.parametrize("run_id", ["nobody", "", "x" * 300, "{tag}", "a\nb"])
async def test_unknown_or_garbage_run_ids_are_refused_clearly(pool: Pool, run_id: str) -> None:
    with pytest.raises(ConfigurationError, match="nervenet runs list"):
        await pool.runs.get(run_id)


async def test_garbage_written_into_a_record_and_its_history_is_shown_not_fatal(pool: Pool) -> None:
    redis = pool.transport.redis
    await redis.hset(
        pool.keys.run("run-odd"),
        mapping={"kind": b"\xff\xfe", "status": "exploded", "started": "NaN", "created": "1e300"},
    )
    await redis.xadd(pool.keys.run_nodes("run-odd"), {"n": b"[1, 2"})
    await redis.xadd(pool.keys.run_nodes("run-odd"), {"n": b'["t", "i", "x", 4, 5, 6, 7, 8, 9]'})
    await redis.zadd(pool.keys.runs, {"run-odd": 1})

    run = await pool.runs.get("run-odd")

    assert (run.kind, run.status, run.started_at, run.created_at) == (
        "\ufffd\ufffd",
        RunStatus.FAILED,
        0.0,
        0.0,
    )
    assert [(n.task_type, n.attempt, n.worker) for n in run.nodes] == [("t", 0, "4")]
    assert [r.run_id for r in await pool.runs.list()] == ["run-odd"]


async def test_an_adapter_records_its_own_runs_with_begin_and_end(pool: Pool, serve: Serve) -> None:
    worker = await serve(pool, handlers())

    await pool.runs.begin("kickoff-1", "crew/research", thread="t-9")
    await pool.coordinator("kickoff-1").dispatch("runs/nap", b"1", timeout=10)
    await pool.runs.end("kickoff-1", RunStatus.SUCCEEDED)

    run = await pool.runs.get("kickoff-1")
    assert (run.status, run.kind, run.thread) == (RunStatus.SUCCEEDED, "crew/research", "t-9")
    assert [(n.task_type, n.worker) for n in run.nodes] == [("runs/nap", worker.worker_id)]
