"""A graph that counts its node runs, for the tests and benchmarks that kill processes mid-run.

Crash recovery is judged by two numbers: every durable run ends with the output a clean run
gives, and how many node executions it took beyond one per node (only work in flight at a kill
may run again). :func:`counted_chain` is that graph: nodes in a row, each waiting the ``delay``
its state says (a model or HTTP call), counting its execution in a Redis hash
(:class:`ExecutionCounter`, field ``<thread id>:<node>``) and appending its name to ``trail``.

Apps around it (``tests/langgraph/apps/durable_app.py``, the recovery and LangGraph
benchmarks) add their pool settings, checkpointer and processes; the core never imports this.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langgraph.config import get_config
from langgraph.graph import START, StateGraph

from nervenet.cluster import async_client, sync_client

#: The hash counting executions: field ``<thread id>:<node>`` -> how often that node ran.
EXECUTIONS = "nervenet-test:executions"


class Job(TypedDict):
    """One run's state."""

    n: int
    """Which run (its output repeats it)."""
    delay: float
    """Seconds each node waits before it finishes."""
    trail: Annotated[list[str], operator.add]
    """The nodes that ran, in order (a reducer, as most real states have one)."""


class ExecutionCounter:
    """Counts node executions in Redis (plain or cluster URL), across every process.

    The client is made on first use, in the process and event loop that count (a worker's), so
    a module-level counter can be built where no loop runs yet.
    """

    def __init__(self, url: str, key: str = EXECUTIONS) -> None:
        self.url = url
        self.key = key
        self._client: Any = None

    async def count(self, run: str, node: str) -> None:
        if self._client is None:
            self._client = await async_client(self.url)
        await self._client.hincrby(self.key, f"{run}:{node}", 1)

    def totals(self) -> dict[str, int]:
        """Every ``<run>:<node>`` field with its count (from any process, synchronously)."""
        client = sync_client(self.url)
        try:
            raw: dict[bytes, bytes] = client.hgetall(self.key)  # type: ignore[assignment]
        finally:
            client.close()
        return {field.decode(): int(count) for field, count in raw.items()}

    def total(self) -> int:
        """All executions counted so far."""
        return sum(self.totals().values())


def counted_chain(nodes: Sequence[str], counter: ExecutionCounter | None = None) -> StateGraph[Job]:
    """``nodes`` in a row from START; each waits ``state["delay"]``, then counts its execution
    under the run's thread id (if ``counter``) and appends its name to ``trail``."""
    builder = StateGraph(Job)
    previous = START
    for name in nodes:
        builder.add_node(name, _node(name, counter))
        builder.add_edge(previous, name)
        previous = name
    return builder


def _node(name: str, counter: ExecutionCounter | None) -> Any:
    async def node(state: Job) -> dict[str, Any]:
        if state["delay"]:
            await asyncio.sleep(state["delay"])
        if counter is not None:
            await counter.count(str(get_config()["configurable"]["thread_id"]), name)
        return {"trail": [name]}

    node.__name__ = name
    return node


def job(n: int, delay: float = 0.0) -> Job:
    """The input of run ``n``."""
    return {"n": n, "delay": delay, "trail": []}


def expected_output(n: int, delay: float, nodes: Sequence[str]) -> Job:
    """What run ``n`` returns when every node ran (once or more)."""
    return {"n": n, "delay": delay, "trail": list(nodes)}
