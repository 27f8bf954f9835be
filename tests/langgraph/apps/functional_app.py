"""durable_app's pipeline written with LangGraph's functional API, for the crash-recovery tests.

Workers: ``nervenet worker functional_app:graph``; coordinators: ``python functional_app.py
FIRST COUNT`` (see durable_app). Each task execution increments a counter in Redis.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from durable_app import FAST, NODES, STEP_SECONDS, _counter, coordinate_with
from langgraph.func import entrypoint, task
from nervenet_langgraph import RedisSaver, distribute

from nervenet import Pool


async def _step(name: str, n: int) -> str:
    await asyncio.sleep(STEP_SECONDS)
    _counter().incr(f"test:executions:{name}:{n}")
    return f"{name}:{n}"


@task
async def fetch(n: int) -> str:
    return await _step("fetch", n)


@task
async def analyze(n: int) -> str:
    return await _step("analyze", n)


@task
async def report(n: int) -> str:
    return await _step("report", n)


def make_graph(url: str) -> Any:
    @entrypoint(checkpointer=RedisSaver.from_url(url))
    async def pipeline(job: dict[str, Any]) -> dict[str, Any]:
        n = job["n"]
        trail = [await fetch(n), await analyze(n), await report(n)]
        return {"n": n, "trail": trail}

    return distribute(
        pipeline, pool=Pool.from_url(url, settings=FAST), name="functional", wait_for_worker=True
    )


assert NODES == ("fetch", "analyze", "report")
graph = make_graph(os.environ.get("NERVENET_REDIS_URL", "redis://localhost:6379/0"))

if __name__ == "__main__":
    asyncio.run(coordinate_with(graph, int(sys.argv[1]), int(sys.argv[2])))
