"""A pool with ``max_runs`` runs at most that many root graph runs of this process at once; the
others wait their turn in the order they came. Subgraphs share their parent's slot, and a
stream closed early gives its slot back. On every backend."""

from __future__ import annotations

import asyncio
import operator
import threading
from typing import Annotated, Any

import pytest
from bounded_runs import Occupancy, all_slots_given_back
from langgraph.graph import START, StateGraph
from nervenet_langgraph import distribute
from typing_extensions import TypedDict

from nervenet import Pool

pytestmark = pytest.mark.langgraph


class State(TypedDict):
    trail: Annotated[list[str], operator.add]


def one_node(occupancy: Occupancy) -> StateGraph[Any]:
    async def work(state: State) -> State:
        occupancy.enter(state["trail"][0])
        await asyncio.sleep(0.05)
        occupancy.leave()
        return {"trail": ["worked"]}

    return StateGraph(State).add_node("work", work).add_edge(START, "work")


async def test_runs_past_the_bound_wait_and_start_in_the_order_they_came(pool: Pool) -> None:
    pool.bound_runs(2)
    occupancy = Occupancy()
    graph = distribute(one_node(occupancy), pool=pool, name="bounded")
    await pool.serve(graph)

    runs = [f"run-{i}" for i in range(6)]
    outputs = await asyncio.gather(*(graph.ainvoke({"trail": [run]}) for run in runs))

    assert [o["trail"] for o in outputs] == [[run, "worked"] for run in runs]
    assert occupancy.most == 2
    # Two at a time, in the order they came (two runs that hold a slot together may start their
    # nodes in either order: their tasks can go to different partitions).
    assert occupancy.waves(2) == [runs[0:2], runs[2:4], runs[4:6]]
    await all_slots_given_back(pool)


async def test_a_subgraph_runs_in_its_parents_slot(pool: Pool) -> None:
    """With one slot, a parent whose node is a distributed subgraph must not wait for a second
    slot for it (it would wait forever)."""
    pool.bound_runs(1)
    occupancy = Occupancy()
    sub = distribute(one_node(occupancy), pool=pool, name="slot-child")
    builder = StateGraph(State).add_node("sub", sub).add_edge(START, "sub")
    graph = distribute(builder, pool=pool, name="slot-parent")
    await pool.serve(graph)

    outputs = await asyncio.wait_for(
        asyncio.gather(*(graph.ainvoke({"trail": [f"p{i}"]}) for i in range(3))), 20
    )

    # (The subgraph's output state goes through the parent's reducer too, as in LangGraph.)
    assert [(o["trail"][0], o["trail"][-1]) for o in outputs] == [
        (f"p{i}", "worked") for i in range(3)
    ]
    assert occupancy.most == 1


async def test_a_stream_closed_early_gives_its_slot_back(pool: Pool) -> None:
    pool.bound_runs(1)
    occupancy = Occupancy()
    builder = one_node(occupancy).add_node("more", lambda s: {"trail": ["more"]})
    graph = distribute(builder.add_edge("work", "more"), pool=pool, name="early-close")
    await pool.serve(graph)

    stream = graph.astream({"trail": ["abandoned"]})
    async for _ in stream:
        break  # a client that went away after the first chunk
    await stream.aclose()  # type: ignore[attr-defined]

    output = await asyncio.wait_for(graph.ainvoke({"trail": ["next"]}), 20)
    assert output["trail"] == ["next", "worked", "more"]
    await all_slots_given_back(pool)


async def test_synchronous_runs_wait_for_a_slot_in_their_threads(pool: Pool) -> None:
    pool.bound_runs(1)
    occupancy = Occupancy()

    def work(state: State) -> State:
        occupancy.enter(state["trail"][0])
        threading.Event().wait(0.05)
        occupancy.leave()
        return {"trail": ["worked"]}

    builder = StateGraph(State).add_node("work", work).add_edge(START, "work")
    graph = distribute(builder, pool=pool, name="sync-bounded")
    await pool.serve(graph)

    def invoke(i: int) -> Any:
        return graph.invoke({"trail": [f"t{i}"]})

    outputs = await asyncio.wait_for(
        asyncio.gather(*(asyncio.to_thread(invoke, i) for i in range(3))), 20
    )
    assert sorted(o["trail"][0] for o in outputs) == ["t0", "t1", "t2"]
    assert occupancy.most == 1
