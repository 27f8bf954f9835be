"""A subgraph distributed by the user and added to a graph behaves as if it had been added plain."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt
from nervenet_langgraph import distribute
from typing_extensions import TypedDict

from nervenet import Pool

pytestmark = pytest.mark.langgraph


class State(TypedDict):
    trail: Annotated[list[str], operator.add]


def child() -> StateGraph[Any]:
    def ask(state: State) -> State:
        return {"trail": [f"answer:{interrupt('?')}"]}

    return StateGraph(State).add_node("ask", ask).add_edge(START, "ask")


def parent(sub: Any) -> StateGraph[Any]:
    def first(state: State) -> State:
        return {"trail": ["first"]}

    return (
        StateGraph(State)
        .add_node("first", first)
        .add_node("review", sub)
        .add_edge(START, "first")
        .add_edge("first", "review")
    )


async def test_get_subgraphs_drawing_and_resume_match_a_plain_subgraph(pool: Pool) -> None:
    sub = distribute(child(), pool=pool, name="child")
    graph = distribute(parent(sub), pool=pool, name="parent", checkpointer=InMemorySaver())
    await pool.serve(graph)  # serves the subgraph's nodes too
    plain = parent(child().compile()).compile(checkpointer=InMemorySaver())

    assert [(ns, g) for ns, g in graph.get_subgraphs()] == [("review", sub)]
    assert graph.get_graph(xray=1).to_json() == plain.get_graph(xray=1).to_json()
    assert graph.get_graph().to_json() == plain.get_graph().to_json()
    config: Any = {"configurable": {"thread_id": "t"}}
    results = []
    for g in (plain, graph):
        first = await g.ainvoke({"trail": []}, config)
        results.append((first["trail"], await g.ainvoke(Command(resume="yes"), config)))
    assert results[1] == results[0]
    assert results[0][1]["trail"][-1] == "answer:yes"
