"""The graph the chaos run drives through real coordinator and worker processes.

plan -> Send x 3 enrich (merged with operator.add) -> summarize. A node's writes applied twice
would show up as duplicates in ``facts``, so the final state also checks "no duplicated effects".
Workers: ``nervenet worker chaos_app:graph``; coordinators: ``python chaos_app.py FIRST COUNT``
(COUNT 0: a restarted coordinator that only takes over abandoned runs).
"""

from __future__ import annotations

import asyncio
import operator
import os
import sys
from typing import Annotated, Any, TypedDict

import redis
from langgraph.graph import START, StateGraph
from langgraph.types import Send
from nervenet_langgraph import RedisSaver, distribute

from nervenet import Pool, PoolSettings

SETTINGS = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0)
NODE_SECONDS = float(os.environ.get("CHAOS_NODE_SECONDS", "0.3"))
ASPECTS = ("parties", "dates", "amounts")


class Doc(TypedDict):
    n: int
    facts: Annotated[list[str], operator.add]
    summary: str


def _count(node: str, n: int) -> None:
    client = redis.Redis.from_url(os.environ["NERVENET_REDIS_URL"])
    try:
        client.incr(f"chaos:executions:{node}:{n}")
    finally:
        client.close()


async def plan(state: Doc) -> dict[str, Any]:
    await asyncio.sleep(NODE_SECONDS)
    _count("plan", state["n"])
    return {"facts": [f"planned:{state['n']}"]}


def fan_out(state: Doc) -> list[Send]:
    return [Send("enrich", {"n": state["n"], "aspect": a}) for a in ASPECTS]


async def enrich(task: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(NODE_SECONDS)
    _count(f"enrich-{task['aspect']}", task["n"])
    return {"facts": [f"{task['aspect']}:{task['n']}"]}


async def summarize(state: Doc) -> dict[str, Any]:
    await asyncio.sleep(NODE_SECONDS)
    _count("summarize", state["n"])
    return {"summary": f"{len(state['facts'])} facts about {state['n']}"}


def build() -> StateGraph:
    builder = StateGraph(Doc)
    builder.add_node("plan", plan)
    builder.add_node("enrich", enrich)
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", fan_out, ["enrich"])
    builder.add_edge("enrich", "summarize")
    return builder


def expected_output(n: int) -> dict[str, Any]:
    facts = [f"planned:{n}", *sorted(f"{a}:{n}" for a in ASPECTS)]
    return {"n": n, "facts": facts, "summary": f"{len(facts)} facts about {n}"}


def normalized(output: dict[str, Any]) -> dict[str, Any]:
    """Send branches finish in any order; compare their facts as a sorted list."""
    return {**output, "facts": [output["facts"][0], *sorted(output["facts"][1:])]}


NODE_COUNT = 2 + len(ASPECTS)
URL = os.environ.get("NERVENET_REDIS_URL", "redis://localhost:6379/0")
graph = distribute(
    build(),
    pool=Pool.from_url(URL, settings=SETTINGS),
    name="chaos",
    checkpointer=RedisSaver.from_url(URL),
    wait_for_worker=True,
)


async def coordinate(first: int, count: int) -> None:
    async with graph.nervenet.pool:
        for n in range(first, first + count):
            config = {"configurable": {"thread_id": f"doc-{n}", "__nervenet_run_id": f"doc-{n}"}}
            await graph.asubmit({"n": n, "facts": [], "summary": ""}, config)
        print("ready", flush=True)
        while True:
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(coordinate(int(sys.argv[1]), int(sys.argv[2])))
