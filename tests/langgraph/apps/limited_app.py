"""A graph whose one node is capped cluster-wide, run by real coordinator and worker processes.

Workers: ``nervenet worker limited_app:graph``; coordinators: ``nervenet serve limited_app:graph``
(both with NERVENET_REDIS_URL set). The node records how many of its runs overlap, across every
process, in Redis (``INCR``/``DECR`` and the peak, in one script so the peak is exact).
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any, TypedDict

import redis.asyncio as aioredis
from langgraph.graph import START, StateGraph

from nervenet import Pool, PoolSettings
from nervenet_langgraph import RedisSaver, distribute

FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0)
CAP = 5
NODE_SECONDS = 0.1
NOW, PEAK, RUNS = "test:{limit}:now", "test:{limit}:peak", "test:{limit}:runs"

ENTER = """
local now = redis.call('INCR', KEYS[1])
redis.call('INCR', KEYS[3])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


class Job(TypedDict):
    n: int
    answer: str


@functools.cache
def _client() -> Any:
    return aioredis.Redis.from_url(os.environ["NERVENET_REDIS_URL"])


async def call_llm(state: Job) -> dict[str, Any]:
    client = _client()
    await client.eval(ENTER, 3, NOW, PEAK, RUNS)
    try:
        await asyncio.sleep(NODE_SECONDS)  # the provider's latency
    finally:
        await client.decr(NOW)
    return {"answer": f"answer-{state['n']}"}


def build() -> StateGraph:
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
