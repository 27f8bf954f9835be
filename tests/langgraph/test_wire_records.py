"""A coordinator and a worker whose node-call records differ refuse each other, clearly."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.graph import START, StateGraph
from nervenet_langgraph import distribute, node_runner, remote_node
from nervenet_langgraph.records import WIRE_VERSION, WireVersionError
from typing_extensions import TypedDict

from nervenet import Pool, RemoteTaskError

pytestmark = pytest.mark.langgraph


class State(TypedDict):
    n: int


def build() -> StateGraph[Any]:
    return StateGraph(State).add_node("inc", lambda s: {"n": s["n"] + 1}).add_edge(START, "inc")


async def served(pool: Pool, name: str) -> Any:
    graph = distribute(build(), pool=pool, name=name)
    await pool.serve(graph)
    return graph


async def test_a_worker_refuses_a_call_from_a_coordinator_of_another_wire_version(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = await served(pool, "newer-coordinator")
    monkeypatch.setattr(remote_node, "WIRE_VERSION", WIRE_VERSION + 1)
    with pytest.raises(RemoteTaskError, match=f"the coordinator sent v{WIRE_VERSION + 1}"):
        await graph.ainvoke({"n": 1})


async def test_a_coordinator_refuses_an_outcome_from_a_worker_of_another_wire_version(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = await served(pool, "older-worker")
    monkeypatch.setattr(node_runner, "WIRE_VERSION", 0)
    with pytest.raises(WireVersionError, match="the worker sent v0"):
        await graph.ainvoke({"n": 1})
    monkeypatch.undo()
    assert await graph.ainvoke({"n": 1}) == {"n": 2}
