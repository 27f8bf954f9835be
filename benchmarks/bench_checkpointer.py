"""What RedisSaver costs: Redis commands and round trips per superstep, and put+get latency.

    python benchmarks/bench_checkpointer.py [redis://host:port/db]

Without a URL it starts a private ``redis-server`` (must be on PATH) on a free port and flushes
nothing else. Prints figures only; the ratio is against ``InMemorySaver`` in the same run.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import redis
from _common import private_redis
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from nervenet_langgraph.checkpoint import RedisSaver

ROUNDS = 500


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def message(i: int) -> AnyMessage:
    text = f"message {i}: " + "lorem ipsum dolor sit amet " * 28  # ~750 bytes, a typical turn
    kind = HumanMessage if i % 2 == 0 else AIMessage
    return kind(content=text, id=f"m-{i}")


def chain(steps: int) -> StateGraph[Chat]:
    """``steps`` nodes in a row, each adding one message: one superstep per node."""
    builder = StateGraph(Chat)
    names = [f"n{i}" for i in range(steps)]
    for i, name in enumerate(names):
        builder.add_node(name, lambda state, i=i: {"messages": [message(100 + i)]})
    for a, b in zip([START, *names], [*names, END], strict=True):
        builder.add_edge(a, b)
    return builder


def count_round_trips(client: redis.Redis) -> list[int]:
    """Wraps ``client.pipeline`` so that every pipeline sent appends its command count."""
    sent: list[int] = []
    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted(*a: Any, **kw: Any) -> Any:
            sent.append(len(pipe.command_stack))
            return execute(*a, **kw)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    client.pipeline = pipeline  # type: ignore[method-assign]
    return sent


def server_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def cost_of_run(url: str, steps: int) -> tuple[int, int, dict[str, int]]:
    """(round trips, server commands, commands by name) of one run of ``chain(steps)``."""
    client = redis.Redis.from_url(url)
    sent = count_round_trips(client)
    graph = chain(steps).compile(checkpointer=RedisSaver(sync_client=client))
    before = server_calls(client)
    graph.invoke({"messages": [message(0)]}, {"configurable": {"thread_id": f"cost-{steps}"}})
    after = server_calls(client)
    by_name = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    by_name["info"] -= 1  # the INFO that took the second snapshot
    client.close()
    return len(sent), sum(by_name.values()), by_name


async def put_get_latency(saver: BaseCheckpointSaver[Any], use_async: bool) -> float:
    """Median seconds for put of a 20-message checkpoint, then get_tuple of the latest."""
    messages = [message(i) for i in range(20)]
    thread: RunnableConfig = {
        "configurable": {"thread_id": f"bench-{use_async}", "checkpoint_ns": ""}
    }
    config: Any = thread
    version: Any = None
    times = []
    for i in range(ROUNDS):
        checkpoint = empty_checkpoint()
        version = saver.get_next_version(version, None)
        checkpoint["channel_values"] = {"messages": messages}
        checkpoint["channel_versions"] = {"messages": version}
        metadata: Any = {"source": "loop", "step": i}
        start = time.perf_counter()
        if use_async:
            config = await saver.aput(config, checkpoint, metadata, {"messages": version})
            await saver.aget_tuple(thread)
        else:
            config = saver.put(config, checkpoint, metadata, {"messages": version})
            saver.get_tuple(thread)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


#: Sent once per new connection (LangGraph's sync loop puts from a thread pool), not per step.
HANDSHAKE = {"hello", "client|setinfo"}


async def main(url: str) -> None:
    short, long_ = cost_of_run(url, 2), cost_of_run(url, 12)
    extra = 10
    per_step = {
        name: (calls - short[2].get(name, 0)) / extra
        for name, calls in long_[2].items()
        if name not in HANDSHAKE
    }
    print(
        f"per extra superstep: {(long_[0] - short[0]) / extra:.1f} round trips, "
        f"{sum(per_step.values()):.1f} commands (MULTI/EXEC included): "
        + ", ".join(f"{name} {n:g}" for name, n in sorted(per_step.items()) if n)
    )

    savers: dict[str, Callable[[], BaseCheckpointSaver[Any]]] = {
        "InMemorySaver": InMemorySaver,
        "RedisSaver": lambda: RedisSaver.from_url(url),
    }
    for use_async in (False, True):
        results = {name: await put_get_latency(make(), use_async) for name, make in savers.items()}
        base = results["InMemorySaver"]
        for name, seconds in results.items():
            print(
                f"put+get, 20-message state, {'async' if use_async else 'sync'} {name}: "
                f"{seconds * 1000:.3f} ms (x{seconds / base:.1f})"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with private_redis() as (url, _server):
            asyncio.run(main(url))
