"""durable_app's pipeline written with LangGraph's functional API, for the crash-recovery tests.

Workers: ``nervenet worker functional_app:graph``; coordinators: ``python functional_app.py
FIRST COUNT`` (see durable_app). Each task execution is counted as durable_app's nodes are.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from durable_app import FAST, NODES, URL, coordinate_with, counter
from langgraph.func import entrypoint, task
from nervenet_langgraph import RedisSaver, distribute

from nervenet import Pool


async def _step(name: str, n: int, delay: float) -> str:
    await asyncio.sleep(delay)
    await counter.count(f"run-{n}", name)
    return name


@task
async def fetch(n: int, delay: float) -> str:
    return await _step("fetch", n, delay)


@task
async def analyze(n: int, delay: float) -> str:
    return await _step("analyze", n, delay)


@task
async def report(n: int, delay: float) -> str:
    return await _step("report", n, delay)


def make_graph(url: str) -> Any:
    @entrypoint(checkpointer=RedisSaver.from_url(url))
    async def pipeline(job: dict[str, Any]) -> dict[str, Any]:
        n, delay = job["n"], job["delay"]
        trail = [await fetch(n, delay), await analyze(n, delay), await report(n, delay)]
        return {"n": n, "delay": delay, "trail": trail}

    return distribute(
        pipeline, pool=Pool.from_url(url, settings=FAST), name="functional", wait_for_worker=True
    )


assert NODES == ("fetch", "analyze", "report")
graph = make_graph(URL)

if __name__ == "__main__":
    asyncio.run(coordinate_with(graph, int(sys.argv[1]), int(sys.argv[2])))
