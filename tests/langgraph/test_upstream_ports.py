"""LangGraph upstream tests excluded from the yardstick for a harness quirk, ported here with the
quirk removed, so what they check is still checked distributed (see upstream/EXCLUDED.md)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

pytest.importorskip("langgraph")

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import RunControl
from typing_extensions import TypedDict

pytestmark = pytest.mark.langgraph


async def until(event: threading.Event, timeout: float = 10.0) -> None:
    assert await asyncio.to_thread(event.wait, timeout), "timed out"


async def test_drain_then_cancel_after_graceful_timeout(distributed: Any) -> None:
    """``tests/test_runtime.py::test_drain_then_cancel_after_graceful_timeout``: the node, on a
    worker, signals through ``threading.Event`` (upstream's ``asyncio.Event`` belongs to the
    test's loop and cannot be set from the worker's thread)."""

    class State(TypedDict, total=False):
        first: str
        second: str

    node_started, node_cancelled, node_finished = (threading.Event() for _ in range(3))

    async def slow_node(state: State) -> dict[str, str]:
        node_started.set()
        try:
            await asyncio.sleep(30)  # very long operation
        except asyncio.CancelledError:
            node_cancelled.set()
            raise
        node_finished.set()
        return {"first": "done"}

    async def second_node(state: State) -> dict[str, str]:
        return {"second": "should-not-run"}

    builder = StateGraph(State)
    builder.add_node("first", slow_node)
    builder.add_node("second", second_node)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    graph = await distributed(builder)
    control = RunControl()

    graph_task = asyncio.create_task(graph.ainvoke({}, control=control))
    await until(node_started)
    control.request_drain("sigterm")
    await asyncio.sleep(1.0)  # the graceful timeout: the node is still running

    assert not node_finished.is_set(), "node should still be running"
    assert not node_cancelled.is_set(), "node should not be cancelled yet"

    graph_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await graph_task

    # The node, on its worker, received CancelledError at its await point before the caller
    # resumed (the coordinator waits for the worker to confirm the cancellation).
    assert node_cancelled.is_set(), "node should have received CancelledError"
    assert not node_finished.is_set(), "node should NOT have finished normally"
