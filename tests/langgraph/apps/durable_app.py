"""The counted chain (``nervenet_langgraph.testing``) as a durable graph, for crash-recovery
tests run by real coordinator and worker processes.

Workers: ``nervenet worker durable_app:graph`` (with NERVENET_REDIS_URL set).
Coordinators: ``python durable_app.py FIRST COUNT`` submits runs ``run-FIRST..`` and keeps
serving (taking over abandoned runs) until killed or until every run of the test is done.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from nervenet_langgraph import RedisSaver, distribute
from nervenet_langgraph.testing import ExecutionCounter, Job, counted_chain, job
from nervenet_langgraph.testing import expected_output as chain_output

from nervenet import Pool, PoolSettings

FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0)
STEP_SECONDS = 0.3
NODES = ("fetch", "analyze", "report")
URL = os.environ.get("NERVENET_REDIS_URL", "redis://localhost:6379/0")
counter = ExecutionCounter(URL)


def make_graph(url: str) -> Any:
    return distribute(
        counted_chain(NODES, counter),
        pool=Pool.from_url(url, settings=FAST),
        name="durable",
        checkpointer=RedisSaver.from_url(url),
        wait_for_worker=True,
    )


def run_input(n: int) -> Job:
    return job(n, STEP_SECONDS)


def expected_output(n: int) -> Job:
    return chain_output(n, STEP_SECONDS, NODES)


graph = make_graph(URL)


async def coordinate_with(graph: Any, first: int, count: int) -> None:
    pool = graph.nervenet.pool
    async with pool:
        for n in range(first, first + count):
            config = {"configurable": {"thread_id": f"run-{n}", "__nervenet_run_id": f"run-{n}"}}
            await graph.asubmit(run_input(n), config)
        print("submitted", flush=True)
        while True:  # keep heartbeating: renew our leases, take over abandoned runs
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(coordinate_with(graph, int(sys.argv[1]), int(sys.argv[2])))
