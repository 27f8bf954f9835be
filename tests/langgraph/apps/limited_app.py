"""A graph whose one node is capped cluster-wide, run by real coordinator and worker processes.

Workers: ``nervenet worker limited_app:graph``; coordinators: ``nervenet serve limited_app:graph``
(both with NERVENET_REDIS_URL set). The node logs when each of its executions starts and ends,
in every process, to one Redis list, from which the test computes how many overlapped (an
execution on a SIGKILLed worker has no end: it ended at the kill).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from typing import Any, TypedDict

import redis.asyncio as aioredis
from langgraph.graph import START, StateGraph
from nervenet_langgraph import RedisSaver, distribute

from nervenet import Pool, PoolSettings

FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0)
CAP = 5
NODE_SECONDS = 0.1
SPANS = "test:{limit}:spans"


class Job(TypedDict):
    n: int
    answer: str


@functools.cache
def _client() -> Any:
    return aioredis.Redis.from_url(os.environ["NERVENET_REDIS_URL"])


async def call_llm(state: Job) -> dict[str, Any]:
    client, execution = _client(), uuid.uuid4().hex
    await client.rpush(SPANS, f"{execution} start {time.time()!r} {os.getpid()}")
    try:
        await asyncio.sleep(NODE_SECONDS)  # the provider's latency
    finally:
        await client.rpush(SPANS, f"{execution} end {time.time()!r} {os.getpid()}")
    return {"answer": f"answer-{state['n']}"}


def running_in(spans: list[bytes], pid: int) -> int:
    """Executions process ``pid`` has started and not ended."""
    started: set[str] = set()
    ended: set[str] = set()
    for line in spans:
        execution, kind, _, where = line.decode().split()
        if int(where) == pid:
            (started if kind == "start" else ended).add(execution)
    return len(started - ended)


def overlap(spans: list[bytes], killed_at: float | None = None) -> tuple[int, int]:
    """Most executions running at one instant, and how many executions there were."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for line in spans:
        execution, kind, at, _ = line.decode().split()
        (starts if kind == "start" else ends)[execution] = float(at)
    events = []
    for execution, started in starts.items():
        ended = ends.get(execution, killed_at)
        assert ended is not None, f"execution {execution} never ended"
        events += [(started, 1), (ended, -1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at a tie
        running += step
        peak = max(peak, running)
    return peak, len(starts)


def build() -> StateGraph[Job]:
    builder = StateGraph(Job)
    builder.add_node("call_llm", call_llm, metadata={"nervenet": {"max_concurrency": CAP}})
    builder.add_edge(START, "call_llm")
    return builder


def make_graph(url: str) -> Any:
    return distribute(
        build(),
        pool=Pool.from_url(url, settings=FAST),
        name="limited",
        checkpointer=RedisSaver.from_url(url),
    )


graph = make_graph(os.environ.get("NERVENET_REDIS_URL", "redis://localhost:6379/0"))
