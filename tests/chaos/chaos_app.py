"""The graph (and, with ``CHAOS_CREW=1``, the crew) the chaos run drives through real processes.

plan -> Send x 3 enrich (merged with operator.add) -> summarize. A node's writes applied twice
would show up as duplicates in ``facts``, so the final state also checks "no duplicated effects".
Workers: ``nervenet worker chaos_app:handlers``; coordinators:
``python chaos_app.py --runs FIRST:COUNT --kickoffs FIRST:COUNT`` (``--runs 0:0``: a restarted
coordinator that takes over abandoned runs). Graph runs, crew kickoffs and flow runs (one per
kickoff, the same crew inside) are all durable (``asubmit``: leased, taken over by a surviving
coordinator); the test awaits each one's result from the pool and compares it with a clean run's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import operator
import os
from typing import Annotated, Any, TypedDict

import redis
import redis.asyncio.cluster
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph
from langgraph.types import Send
from nervenet_langgraph import RedisSaver, distribute

from nervenet import Pool, PoolSettings

# Sized for a 2-core machine shared by 7 busy processes and a Redis that fsyncs every write:
# with 1 s leases and visibility, event-loop stalls under that load were taken for deaths (the
# 200-run mix saw 704 takeovers of live runs and 488 node re-executions). 3 s still puts a
# killed process's work back in play within a few seconds (see settings.PoolSettings).
HEARTBEAT, VISIBILITY, LEASE = 0.5, 3.0, 3.0
SETTINGS = PoolSettings(
    heartbeat_interval=HEARTBEAT, visibility_timeout=VISIBILITY, lease_ttl=LEASE
)
NODE_SECONDS = float(os.environ.get("CHAOS_NODE_SECONDS", "0.3"))
ASPECTS = ("parties", "dates", "amounts")


class Doc(TypedDict):
    n: int
    facts: Annotated[list[str], operator.add]
    summary: str


def _count(node: str, n: int) -> None:
    if os.environ.get("CHAOS_CLUSTER") == "1":
        _count_on_cluster(f"chaos:executions:{node}:{n}")
        return
    client = redis.Redis.from_url(os.environ["NERVENET_REDIS_URL"])
    try:
        client.incr(f"chaos:executions:{node}:{n}")
    finally:
        client.close()


_cluster_client: Any = None
_counting: set[asyncio.Task[None]] = set()


def _count_on_cluster(key: str) -> None:
    """``CHAOS_CLUSTER=1`` (a Redis Cluster that loses a primary mid-run): the count goes
    through a cluster client, in the background, retried across the failover, so that the
    node itself neither blocks its worker's event loop nor fails on the test's bookkeeping."""
    task = asyncio.get_running_loop().create_task(_incr_on_cluster(key))
    _counting.add(task)
    task.add_done_callback(_counting.discard)


async def _incr_on_cluster(key: str) -> None:
    global _cluster_client
    for _ in range(300):
        try:
            if _cluster_client is None:
                _cluster_client = redis.asyncio.cluster.RedisCluster.from_url(
                    os.environ["NERVENET_REDIS_URL"]
                )
            await _cluster_client.incr(key)
            return
        except (redis.RedisError, OSError):
            await asyncio.sleep(0.2)
    log.error("could not count an execution: %s", key)


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


def build() -> StateGraph[Any]:
    builder = StateGraph(Doc)
    builder.add_node("plan", plan)
    # A Send target: it gets the Send's payload, not the state, which add_node's types cannot say.
    builder.add_node("enrich", enrich)  # type: ignore[arg-type]
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


handlers: dict[str, Any] = dict(graph.nervenet_handlers())
"""What chaos workers serve: the graph's nodes, and the crew's tasks when ``CHAOS_CREW=1``."""
if os.environ.get("CHAOS_CREW") == "1":
    import chaos_crew

    crew = chaos_crew.distribute(graph.nervenet.pool)
    flows = chaos_crew.distribute_flows(crew, graph.nervenet.pool)
    handlers.update(crew.nervenet_handlers())

log = logging.getLogger("chaos")
GO = "chaos:go"
"""Set by the test once every process is up: coordinators start their work then."""


async def coordinate(runs: range, kickoffs: range) -> None:
    pool = graph.nervenet.pool
    async with pool:
        print("ready", flush=True)
        # Imports take minutes on a loaded 2-core machine: every process starts work together,
        # so the schedule strikes while all of it is in flight.
        while not await _riding_out_outages(lambda: pool.transport.redis.exists(GO)):
            await asyncio.sleep(0.1)
        for n in runs:
            config: RunnableConfig = {
                "configurable": {"thread_id": f"doc-{n}", "__nervenet_run_id": f"doc-{n}"}
            }
            await graph.asubmit({"n": n, "facts": [], "summary": ""}, config)
        for k in kickoffs:
            await crew.asubmit(chaos_crew.kickoff_inputs(k), run_id=chaos_crew.run_id(k))
            await flows.asubmit(chaos_crew.kickoff_inputs(k), run_id=chaos_crew.flow_run_id(k))
        print("submitted", flush=True)
        while True:
            await asyncio.sleep(3600)


async def _riding_out_outages(command: Any) -> Any:
    from redis.exceptions import ConnectionError as RedisConnectionError

    for attempt in range(40):
        try:
            return await command()
        except (RedisConnectionError, OSError):
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
    return await command()


def _span(text: str) -> range:
    first, count = (int(part) for part in text.split(":"))
    return range(first, first + count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=_span, default=range(0))
    parser.add_argument("--kickoffs", type=_span, default=range(0))
    args = parser.parse_args()
    if os.environ.get("CHAOS_LOG") == "1":  # timestamps and levels, for the cluster test
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    asyncio.run(coordinate(args.runs, args.kickoffs))
