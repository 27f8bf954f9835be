"""What a node finds around itself on a worker is what it finds in plain LangGraph.

Each case was found failing by LangGraph's own test suite run distributed (upstream/FINDINGS.md)
and is pinned here on both backends: graphs a node runs (their checkpointer and their stream),
the ``tools`` stream, error handlers, ``@task`` calls, values that must come back as the very
same classes (defined in a function, pydantic ``model_fields_set``, tuples), a null resume used
once, and the graph object itself (all attributes kept, drawn as compiled).

No ``from __future__ import annotations``: the state classes defined inside tests must resolve.
"""

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest
import typing_extensions
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import NodeError
from langgraph.func import task
from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt
from pydantic import BaseModel, field_validator

pytestmark = pytest.mark.langgraph


class Trail(TypedDict):
    trail: Annotated[list[str], operator.add]


async def collect(
    graph: Any, inputs: Any, config: RunnableConfig | None = None, **kw: Any
) -> list[Any]:
    return [chunk async for chunk in graph.astream(inputs, config, **kw)]


def _strip_task_ids(chunks: list[Any]) -> list[Any]:
    """Namespaces carry per-run task ids (``node:<id>``): compare their node names."""
    return [(tuple(s.split(":")[0] for s in ns), *rest) for ns, *rest in chunks]


def nested_graph_builder() -> tuple[StateGraph[Any], StateGraph[Any]]:
    """A parent whose node runs a child graph that interrupts and keeps state across calls."""

    def ask(state: Trail) -> dict[str, Any]:
        return {"trail": [f"answer:{interrupt('question?')}"]}

    child = StateGraph(Trail)
    child.add_node("ask", ask)
    child.add_edge(START, "ask")
    return child, StateGraph(Trail)


def parent_running_child(child_graph: Any) -> StateGraph[Any]:
    async def run_child(state: Trail) -> dict[str, Any]:
        result = await child_graph.ainvoke({"trail": ["in"]})
        return {"trail": result["trail"]}

    parent = StateGraph(Trail)
    parent.add_node("run_child", run_child)
    parent.add_edge(START, "run_child")
    return parent


async def test_graph_run_inside_a_node_keeps_its_checkpoint_and_interrupts(
    distributed: Any,
) -> None:
    outputs = []
    for mode in ("plain", "distributed"):
        child, _ = nested_graph_builder()
        if mode == "plain":
            child_graph = child.compile(checkpointer=True)
            graph = parent_running_child(child_graph).compile(checkpointer=InMemorySaver())
        else:
            child_graph = await distributed(child, checkpointer=True)
            graph = await distributed(
                parent_running_child(child_graph), checkpointer=InMemorySaver()
            )
        config: RunnableConfig = {"configurable": {"thread_id": "t"}}
        first = await collect(graph, {"trail": []}, config, subgraphs=True)
        second = await collect(graph, Command(resume="42"), config, subgraphs=True)
        state = await graph.aget_state(config, subgraphs=True)
        outputs.append((_strip_task_ids(first), _strip_task_ids(second), state.values))
    plain, dist = outputs
    assert dist[2] == plain[2] == {"trail": ["in", "answer:42"]}
    assert [c[0] for c in dist[0]] == [c[0] for c in plain[0]], "child events reach the caller"
    assert dist[1] == plain[1]


def tool_calling_graph() -> StateGraph[Any]:
    @tool
    def lookup(city: str) -> str:
        """Weather of a city."""
        return f"sunny in {city}"

    def call_tool(state: Trail) -> dict[str, Any]:
        call = {"name": "lookup", "args": {"city": "Oslo"}, "id": "call-1", "type": "tool_call"}
        return {"trail": [lookup.invoke(call).content]}

    builder = StateGraph(Trail)
    builder.add_node("call_tool", call_tool)
    builder.add_edge(START, "call_tool")
    return builder


async def test_tools_stream_mode_relays_tool_events(distributed: Any) -> None:
    inputs: Trail = {"trail": []}
    expected = await collect(tool_calling_graph().compile(), inputs, stream_mode="tools")
    got = await collect(await distributed(tool_calling_graph()), inputs, stream_mode="tools")
    assert expected, "plain LangGraph streams tool events"
    assert [c["event"] for c in got] == [c["event"] for c in expected]
    assert got[-1]["output"] == expected[-1]["output"]


def failing_graph() -> StateGraph[Any]:
    def fail(state: Trail) -> dict[str, Any]:
        raise KeyError("missing")

    def handle(state: Trail, error: NodeError) -> dict[str, Any]:
        return {"trail": [f"{error.node}:{type(error.error).__name__}:{error.error.args[0]}"]}

    builder = StateGraph(Trail)
    builder.add_node("fail", fail, error_handler=handle)
    builder.add_edge(START, "fail")
    return builder


async def test_error_handler_gets_the_node_error(distributed: Any) -> None:
    expected = await failing_graph().compile().ainvoke({"trail": []})
    assert await (await distributed(failing_graph())).ainvoke({"trail": []}) == expected
    assert expected == {"trail": ["fail:KeyError:missing"]}


def task_calling_graph() -> StateGraph[Any]:
    @task
    async def shout(word: str) -> str:
        return word.upper()

    async def node(state: Trail) -> dict[str, Any]:
        return {"trail": [await shout("hi"), await shout("there")]}

    builder = StateGraph(Trail)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    return builder


async def test_task_called_inside_a_node_returns_its_value(distributed: Any) -> None:
    expected = await task_calling_graph().compile().ainvoke({"trail": []})
    assert await (await distributed(task_calling_graph())).ainvoke({"trail": []}) == expected


def cancelling_graph() -> StateGraph[Any]:
    async def node(state: Trail) -> dict[str, Any]:
        raise asyncio.CancelledError("the node gave up")

    builder = StateGraph(Trail)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    return builder


async def test_cancelled_error_raised_by_a_node_fails_the_run_like_plain(distributed: Any) -> None:
    with pytest.raises(BaseException) as plain:
        await cancelling_graph().compile().ainvoke({"trail": []})
    graph = await distributed(cancelling_graph())
    with pytest.raises(BaseException) as dist:
        await asyncio.wait_for(graph.ainvoke({"trail": []}), 20)
    assert type(dist.value) is type(plain.value)


async def test_classes_defined_in_a_function_come_back_as_themselves(distributed: Any) -> None:
    class Reading(BaseModel):
        celsius: float

    class Weather(TypedDict):
        readings: Annotated[list[Reading], operator.add]

    def measure(state: Weather) -> dict[str, Any]:
        assert all(isinstance(r, Reading) for r in state["readings"]), state
        return {"readings": [Reading(celsius=len(state["readings"]) + 0.5)]}

    def build() -> StateGraph[Any]:
        builder = StateGraph(Weather)
        builder.add_node("measure", measure)
        builder.add_edge(START, "measure")
        return builder

    inputs = {"readings": [Reading(celsius=1.0)]}
    result = await (await distributed(build())).ainvoke(inputs)
    assert result == await build().compile().ainvoke(inputs)
    assert all(type(r) is Reading for r in result["readings"])


async def test_pydantic_state_with_a_typed_dict_field_reaches_the_node_as_the_model(
    distributed: Any,
) -> None:
    class Point(typing_extensions.TypedDict):  # pydantic wants this one before Python 3.12
        x: int

    class Shape(BaseModel):
        name: str
        origin: Point

    def move(state: Shape) -> dict[str, Any]:
        assert isinstance(state, Shape), state  # a TypedDict field once made it a dict
        return {"origin": {"x": state.origin["x"] + 1}}

    def build() -> StateGraph[Any]:
        builder = StateGraph(Shape)
        builder.add_node("move", move)
        builder.add_edge(START, "move")
        return builder

    inputs = {"name": "dot", "origin": {"x": 1}}
    result = await (await distributed(build())).ainvoke(inputs)
    assert result == await build().compile().ainvoke(inputs) == {"name": "dot", "origin": {"x": 2}}


async def test_pydantic_update_comes_back_without_validating_again(distributed: Any) -> None:
    class Form(BaseModel):
        name: str = "anonymous"
        title: str = ""

        @field_validator("title", mode="after")
        @classmethod
        def mark(cls, value: str) -> str:
            return value if value.startswith("Validated ") else f"Validated {value}"

    def rename(state: Form) -> Command[None]:
        return Command(update=Form(title="report"))

    def build() -> StateGraph[Any]:
        builder = StateGraph(Form)
        builder.add_node("rename", rename)
        builder.add_edge(START, "rename")
        return builder

    expected = await build().compile().ainvoke(Form(name="ada"))
    assert await (await distributed(build())).ainvoke(Form(name="ada")) == expected
    assert expected == {"name": "anonymous", "title": "Validated report"}


async def test_tuple_writes_stay_tuples(distributed: Any) -> None:
    def write_twice(state: Trail) -> Command[None]:
        return Command(update=[("trail", ["one"]), ("trail", ["two"])])

    def build() -> StateGraph[Any]:
        builder = StateGraph(Trail)
        builder.add_node("write twice", write_twice)  # LangGraph allows spaces in node names
        builder.add_edge(START, "write twice")
        return builder

    expected = await collect(build().compile(), {"trail": []}, stream_mode="updates")
    assert await collect(await distributed(build()), {"trail": []}, stream_mode="updates") == (
        expected
    )


def two_questions_in_a_subgraph() -> StateGraph[Any]:
    def first(state: Trail) -> dict[str, Any]:
        return {"trail": [f"first:{interrupt('1?')}"]}

    def second(state: Trail) -> dict[str, Any]:
        return {"trail": [f"second:{interrupt('2?')}"]}

    child = StateGraph(Trail)
    child.add_node("first", first)
    child.add_node("second", second)
    child.add_edge(START, "first")
    child.add_edge("first", "second")
    parent = StateGraph(Trail)
    parent.add_node("child", child.compile())
    parent.add_edge(START, "child")
    return parent


async def test_a_resume_answers_one_interrupt_only(distributed: Any) -> None:
    results = []
    for graph in (
        two_questions_in_a_subgraph().compile(checkpointer=InMemorySaver()),
        await distributed(two_questions_in_a_subgraph(), checkpointer=InMemorySaver()),
    ):
        config: RunnableConfig = {"configurable": {"thread_id": "t"}}
        await graph.ainvoke({"trail": []}, config)
        after_one = await graph.ainvoke(Command(resume="a"), config)
        results.append((after_one["trail"], [i.value for i in after_one["__interrupt__"]]))
    assert results[1] == results[0] == ([], ["2?"])


async def test_graph_keeps_compiled_attributes_and_draws_like_the_original(
    distributed: Any,
) -> None:
    class State(BaseModel):
        count: int = 0

    def bump(state: State) -> dict[str, Any]:
        return {"count": state.count + 1}

    def build() -> StateGraph[Any]:
        builder = StateGraph(State)
        builder.add_node("bump", bump)
        builder.add_edge(START, "bump")
        return builder

    plain = build().compile()
    graph = await distributed(build())
    # version="v2" maps values back to the state class with the mapper compile() sets.
    expected = [c async for c in plain.astream(State(), stream_mode="values", version="v2")]
    got = [c async for c in graph.astream(State(), stream_mode="values", version="v2")]
    assert got == expected
    assert type(got[-1]["data"]) is State
    assert graph.get_graph().to_json() == plain.get_graph().to_json()
    assert graph.with_config(tags=["x"]).nervenet is graph.nervenet
