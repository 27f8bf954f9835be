"""Durable graph runs keep run records: status (interrupted at a human-in-the-loop interrupt),
thread, the node history; a run cancelled with ``rollback`` leaves no checkpoints."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import pytest
from fast_settings import FAST
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from nervenet_langgraph import RedisSaver, distribute

from nervenet import Pool, RunCancelled, RunStatus

pytestmark = pytest.mark.redis
_names = itertools.count()
started = asyncio.Event()


class State(TypedDict):
    trail: list[str]


def step(name: str) -> Any:
    async def node(state: State) -> State:
        return {"trail": [*state["trail"], name]}

    return node


async def ask(state: State) -> State:
    answer = interrupt("approve?")
    return {"trail": [*state["trail"], f"asked:{answer}"]}


async def block(state: State) -> State:
    started.set()
    await asyncio.sleep(60)
    return state


def builder(last: Any) -> StateGraph[State]:
    graph = StateGraph(State)
    graph.add_node("first", step("first"))
    graph.add_node("last", last)
    graph.add_edge(START, "first")
    graph.add_edge("first", "last")
    graph.add_edge("last", END)
    return graph


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[Pool]:
    async with Pool.from_url(redis_url, settings=FAST) as pool:
        yield pool


async def durable(pool: Pool, redis_url: str, last: Any) -> Any:
    graph = distribute(
        builder(last),
        pool=pool,
        name=f"records{next(_names)}",
        checkpointer=RedisSaver.from_url(redis_url),
    )
    await pool.serve(graph)
    return graph


async def test_a_graph_run_records_its_thread_and_nodes(pool: Pool, redis_url: str) -> None:
    graph = await durable(pool, redis_url, step("last"))

    run = await graph.asubmit({"trail": []}, {"configurable": {"thread_id": "t-ok"}})
    assert await run.result(timeout=20) == {"trail": ["first", "last"]}

    record = await pool.runs.get(run.run_id)
    assert (record.status, record.thread, record.kind) == (
        RunStatus.SUCCEEDED,
        "t-ok",
        graph.nervenet.name,
    )
    assert [n.task_type.rsplit("/", 1)[-1] for n in record.nodes] == ["first", "last"]
    assert {n.outcome for n in record.nodes} == {"ok"}


async def test_a_run_stopped_at_an_interrupt_is_recorded_interrupted(
    pool: Pool, redis_url: str
) -> None:
    graph = await durable(pool, redis_url, ask)

    run = await graph.asubmit({"trail": []}, {"configurable": {"thread_id": "t-ask"}})
    output = await run.result(timeout=20)

    assert "__interrupt__" in output
    assert (await pool.runs.get(run.run_id)).status is RunStatus.INTERRUPTED


async def test_rollback_removes_the_threads_checkpoints(pool: Pool, redis_url: str) -> None:
    started.clear()
    graph = await durable(pool, redis_url, block)
    config = {"configurable": {"thread_id": "t-rollback"}}
    run = await graph.asubmit({"trail": []}, config)
    await asyncio.wait_for(started.wait(), 20)
    assert (await graph.aget_state(config)).values == {"trail": ["first"]}

    await pool.runs.cancel(run.run_id, "rollback")

    with pytest.raises(RunCancelled):
        await run.result(timeout=20)
    assert (await graph.aget_state(config)).values == {}
    assert (await pool.runs.get(run.run_id)).status is RunStatus.CANCELLED


async def test_join_streams_a_runs_chunks_to_another_process_and_resumes(
    pool: Pool, redis_url: str
) -> None:
    graph = await durable(pool, redis_url, step("last"))
    async with Pool.from_url(redis_url, settings=FAST) as watcher_pool:
        watcher = distribute(
            builder(step("last")), pool=watcher_pool, name=graph.nervenet.name,
            checkpointer=RedisSaver.from_url(redis_url),
        )  # fmt: skip
        run = await graph.asubmit({"trail": []}, {"configurable": {"thread_id": "t-join"}})
        output = await run.result(timeout=20)
        chunks = [chunk async for chunk in watcher.join(run.run_id)]
        rest = [chunk async for chunk in watcher.join(run.run_id, chunks[1][0])]

    values = [payload for _, (mode, payload) in chunks if mode == "values"]
    updates = [payload for _, (mode, payload) in chunks if mode == "updates"]
    assert values[-1] == output == {"trail": ["first", "last"]}
    assert updates == [{"first": {"trail": ["first"]}}, {"last": {"trail": ["first", "last"]}}]
    assert rest == chunks[2:]
