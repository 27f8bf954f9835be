"""The graph ``bench_langgraph.py`` measures: three nodes in a row that do nothing, or only wait.

Each node appends its name to ``trail`` (a reducer, as most real states have one) and, when the
state says so, first awaits ``asyncio.sleep(delay)``: ``delay=0`` measures pure overhead, ``0.05``
stands in for an I/O-bound node (an LLM or HTTP call), a long delay holds runs in flight.

Served by the benchmark's worker processes from this folder:

    NERVENET_REDIS_URL=redis://127.0.0.1:PORT/0 nervenet worker lg_bench_app:graph
"""

from __future__ import annotations

import asyncio
import operator
import os
from typing import Annotated, Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from nervenet_langgraph import DistributedGraph, distribute

from nervenet import Pool

NAME = "bench"
NODES = ("first", "second", "third")

#: Nodes currently inside their ``delay`` in *this* process (plain LangGraph runs them here).
holding = 0


class Run(TypedDict):
    n: int
    delay: float
    trail: Annotated[list[str], operator.add]


def _node(name: str) -> Any:
    async def node(state: Run) -> dict[str, Any]:
        global holding
        if state["delay"]:
            holding += 1
            try:
                await asyncio.sleep(state["delay"])
            finally:
                holding -= 1
        return {"trail": [name]}

    node.__name__ = name
    return node


def build() -> StateGraph[Run]:
    builder = StateGraph(Run)
    previous = START
    for name in NODES:
        builder.add_node(name, _node(name))
        builder.add_edge(previous, name)
        previous = name
    return builder


def plain() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The same graph as LangGraph runs it by itself, in this process, without a checkpointer."""
    return build().compile()


def distributed(url: str, **pool_options: Any) -> DistributedGraph:
    """Nodes on the pool at ``url``; no checkpointer, as in :func:`plain`."""
    return distribute(build(), pool=Pool.from_url(url, **pool_options), name=NAME)


def run_input(n: int, delay: float) -> Run:
    return {"n": n, "delay": delay, "trail": []}


def is_expected(output: Any, n: int, delay: float) -> bool:
    return bool(output == {"n": n, "delay": delay, "trail": list(NODES)})


#: What ``nervenet worker lg_bench_app:graph`` serves (its pool is the worker's own).
graph = distributed(os.environ.get("NERVENET_REDIS_URL", "redis://127.0.0.1:6379/0"))
