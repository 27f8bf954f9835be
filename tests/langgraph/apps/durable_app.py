"""A small graph for crash-recovery tests, run by real coordinator and worker processes.

Workers: ``nervenet worker durable_app:graph`` (with NERVENET_REDIS_URL set).
Coordinators: ``python durable_app.py URL FIRST COUNT`` submits runs ``run-FIRST..`` and keeps
serving (taking over abandoned runs) until killed or until every run of the test is done.
Each node execution increments a counter in Redis so the test can count re-executions.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import sys
from typing import Annotated, Any, TypedDict

from langgraph.graph import START, StateGraph
from nervenet_langgraph import RedisSaver, distribute

from nervenet import Pool, PoolSettings
from nervenet.cluster import sync_client

FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0)
STEP_SECONDS = 0.3
NODES = ("fetch", "analyze", "report")


class Job(TypedDict):
    n: int
    trail: Annotated[list[str], operator.add]


@functools.cache
def _counter() -> Any:
    """One client per process: a cluster client discovers the topology when it is made."""
    return sync_client(os.environ["NERVENET_REDIS_URL"])


def _counted(name: str) -> Any:
    async def node(state: Job) -> dict[str, Any]:
        await asyncio.sleep(STEP_SECONDS)
        _counter().incr(f"test:executions:{name}:{state['n']}")
        return {"trail": [f"{name}:{state['n']}"]}

    node.__name__ = name
    return node


def build() -> StateGraph:
    builder = StateGraph(Job)
    previous = START
    for name in NODES:
        builder.add_node(name, _counted(name))
        builder.add_edge(previous, name)
        previous = name
    return builder


def make_graph(url: str) -> Any:
    return distribute(
        build(),
        pool=Pool.from_url(url, settings=FAST),
        name="durable",
        checkpointer=RedisSaver.from_url(url),
        wait_for_worker=True,
    )


def expected_output(n: int) -> dict[str, Any]:
    return {"n": n, "trail": [f"{name}:{n}" for name in NODES]}


graph = make_graph(os.environ.get("NERVENET_REDIS_URL", "redis://localhost:6379/0"))


async def coordinate(first: int, count: int) -> None:
    await coordinate_with(graph, first, count)


async def coordinate_with(graph: Any, first: int, count: int) -> None:
    pool = graph.nervenet.pool
    async with pool:
        for n in range(first, first + count):
            config = {"configurable": {"thread_id": f"run-{n}", "__nervenet_run_id": f"run-{n}"}}
            await graph.asubmit({"n": n, "trail": []}, config)
        print("submitted", flush=True)
        while True:  # keep heartbeating: renew our leases, take over abandoned runs
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(coordinate(int(sys.argv[1]), int(sys.argv[2])))
