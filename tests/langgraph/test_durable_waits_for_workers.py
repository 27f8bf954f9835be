"""A durable run's nodes wait for a worker to register (a coordinator may be up before the
workers, as after a deploy); a plain ``ainvoke`` without a durable run still fails at once."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest
from fast_settings import FAST
from langgraph.graph import START, StateGraph
from nervenet_langgraph import RedisSaver, distribute

from nervenet import NoLiveWorker, Pool

pytestmark = [pytest.mark.langgraph, pytest.mark.redis]


class State(TypedDict):
    trail: list[str]


async def visit(state: State) -> dict[str, Any]:
    return {"trail": [*state["trail"], "visited"]}


def builder() -> StateGraph[State]:
    graph = StateGraph(State)
    graph.add_node("visit", visit)
    graph.add_edge(START, "visit")
    return graph


async def test_a_durable_run_started_before_any_worker_finishes_once_one_starts(
    redis_url: str,
) -> None:
    async with Pool.from_url(redis_url, settings=FAST) as pool:
        graph = distribute(
            builder(), pool=pool, name="early", checkpointer=RedisSaver.from_url(redis_url)
        )
        run = await graph.asubmit({"trail": []}, {"configurable": {"thread_id": "t-early"}})
        await asyncio.sleep(1.0)  # the run's node waits: no worker serves it yet
        await pool.serve(graph)

        assert await run.result(timeout=20) == {"trail": ["visited"]}


async def test_a_plain_invoke_without_a_worker_still_fails_at_once(redis_url: str) -> None:
    async with Pool.from_url(redis_url, settings=FAST) as pool:
        graph = distribute(builder(), pool=pool, name="nobody")
        with pytest.raises(NoLiveWorker):
            await asyncio.wait_for(graph.ainvoke({"trail": []}), 5)
