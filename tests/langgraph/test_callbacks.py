"""Callback handlers and traces see a distributed node's insides as they do in plain LangGraph.

A tracer passed in ``config["callbacks"]``, ``astream_events`` and LangSmith's run tree all hear
about what a node calls (chat models, tools, nested runnables) as children of the node's run,
although those calls happen on a worker.
"""

from __future__ import annotations

import contextlib
from typing import Any
from unittest.mock import MagicMock, patch
from uuid import UUID

import langsmith
import pytest
from fast_settings import FAST
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables.schema import StreamEvent
from langchain_core.tools import tool
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langgraph.graph import START, MessagesState, StateGraph
from langsmith.run_helpers import get_current_run_tree
from nervenet_langgraph import distribute

from nervenet import Pool

pytestmark = pytest.mark.langgraph


class RunCollector(BaseTracer):
    """A tracer that keeps every finished root run with its children."""

    def __init__(self) -> None:
        super().__init__()
        self.roots: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.roots.append(run)


def shape(run: Run) -> dict[str, Any]:
    """What a trace shows of a run: name, type, outcome, children (ids and times differ)."""
    outputs = run.outputs or {}
    if run.run_type == "llm":
        outputs = {"text": [g["text"] for gs in outputs["generations"] for g in gs]}
    return {
        "name": run.name,
        "type": run.run_type,
        "error": (run.error or "").split("(")[0],
        "outputs": outputs if run.run_type != "chain" else None,
        "children": [shape(c) for c in sorted(run.child_runs, key=lambda c: c.dotted_order)],
    }


@tool
def lookup(city: str) -> str:
    """Weather of a city."""
    if city == "nowhere":
        raise ValueError("no such city")
    return f"sunny in {city}"


def chat_graph(sync: bool = False) -> StateGraph[Any]:
    """A node that calls a chat model, a tool twice (once failing) and a lambda."""
    model = GenericFakeChatModel(messages=iter([AIMessage("one two three", id="ai-1")] * 4))
    shout = RunnableLambda(lambda text: text.upper()).with_config(run_name="shout")

    async def chat(state: MessagesState) -> dict[str, Any]:
        reply = await model.ainvoke(state["messages"])
        weather = await lookup.ainvoke({"city": "Oslo"})
        with contextlib.suppress(ValueError):
            await lookup.ainvoke({"city": "nowhere"})
        return {"messages": [reply, AIMessage(await shout.ainvoke(weather), id="ai-2")]}

    def chat_sync(state: MessagesState) -> dict[str, Any]:
        reply = model.invoke(state["messages"])
        weather = lookup.invoke({"city": "Oslo"})
        with contextlib.suppress(ValueError):
            lookup.invoke({"city": "nowhere"})
        return {"messages": [reply, AIMessage(shout.invoke(weather), id="ai-2")]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", chat_sync if sync else chat)
    builder.add_edge(START, "chat")
    return builder


INPUTS = {"messages": [HumanMessage("hi", id="h-1")]}


async def test_a_tracer_sees_the_node_children_as_in_plain(distributed: Any) -> None:
    plain = RunCollector()
    expected = await chat_graph().compile().ainvoke(INPUTS, {"callbacks": [plain]})
    tracer = RunCollector()
    graph = await distributed(chat_graph())
    assert await graph.ainvoke(INPUTS, {"callbacks": [tracer]}) == expected

    assert [shape(r) for r in tracer.roots] == [shape(r) for r in plain.roots]
    (node,) = [c for c in tracer.roots[0].child_runs if c.name == "chat"]
    children = [(c.name, c.run_type) for c in node.child_runs]
    assert children == [
        ("GenericFakeChatModel", "llm"),
        ("lookup", "tool"),
        ("lookup", "tool"),
        ("shout", "chain"),
    ]
    assert node.child_runs[2].error is not None and "ValueError" in node.child_runs[2].error
    assert all(c.parent_run_id == node.id for c in node.child_runs)


async def test_astream_events_include_the_worker_token_events(distributed: Any) -> None:
    def names(events: list[StreamEvent]) -> list[tuple[str, str, Any]]:
        return [
            (e["event"], e["name"], getattr(e["data"].get("chunk"), "content", None))
            for e in events
            # the node's own start and end too: its children's events come between them
            if e["event"].startswith(("on_chat_model", "on_tool")) or e["name"] == "chat"
        ]

    plain = chat_graph().compile()
    expected = [e async for e in plain.astream_events(INPUTS, version="v2")]
    graph = await distributed(chat_graph())
    events = [e async for e in graph.astream_events(INPUTS, version="v2")]

    assert names(events) == names(expected)
    assert ("on_chat_model_stream", "GenericFakeChatModel", "two") in names(events)


async def test_a_value_that_does_not_serialize_reaches_the_tracer_as_text(
    distributed: Any,
) -> None:
    lock_holder: Runnable[Any, str] = RunnableLambda(lambda _: "done").with_config(
        run_name="holder"
    )

    def node(state: MessagesState) -> dict[str, Any]:
        lock_holder.invoke({"lock": __import__("threading").Lock()})
        return {"messages": [AIMessage("ok", id="ai-3")]}

    builder = StateGraph(MessagesState)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    tracer = RunCollector()
    graph = await distributed(builder)
    await graph.ainvoke(INPUTS, {"callbacks": [tracer]})

    (node_run,) = [c for c in tracer.roots[0].child_runs if c.name == "node"]
    (holder,) = node_run.child_runs
    assert holder.name == "holder" and "lock" in str(holder.inputs["lock"])


async def test_langsmith_run_tree_in_the_node_is_the_node_run(distributed: Any) -> None:
    seen: dict[str, Any] = {}

    def node(state: MessagesState) -> dict[str, Any]:
        run_tree = get_current_run_tree()
        seen["run_tree"] = (run_tree.id, run_tree.trace_id) if run_tree else None
        return {"messages": [AIMessage("ok", id="ai-4")]}

    builder = StateGraph(MessagesState)
    builder.add_node("node", node)
    builder.add_edge(START, "node")

    async def node_run_tree(graph: Any) -> tuple[UUID, UUID]:
        seen.clear()
        tracer = RunCollector()
        client = MagicMock(spec=langsmith.Client)
        with (
            patch("langchain_core.tracers.langchain.get_client", return_value=client),
            langsmith.tracing_context(enabled=True, client=client),
        ):
            await graph.ainvoke(INPUTS, {"callbacks": [tracer]})
        root = tracer.roots[0]
        (node_run,) = [c for c in root.child_runs if c.name == "node"]
        assert seen["run_tree"] is not None
        run_tree: tuple[UUID, UUID] = seen["run_tree"]
        assert run_tree == (node_run.id, root.trace_id)
        return run_tree

    await node_run_tree(builder.compile())
    await node_run_tree(await distributed(builder))


def test_a_sync_graph_reports_to_its_tracer_as_in_plain() -> None:
    plain = RunCollector()
    expected = chat_graph(sync=True).compile().invoke(INPUTS, {"callbacks": [plain]})
    pool = Pool.local(settings=FAST)
    try:
        graph = distribute(chat_graph(sync=True), pool=pool, name="sync-callbacks")
        pool.call_sync(lambda: pool.serve(graph))
        tracer = RunCollector()
        assert graph.invoke(INPUTS, {"callbacks": [tracer]}) == expected
    finally:
        pool.close()
    assert [shape(r) for r in tracer.roots] == [shape(r) for r in plain.roots]


async def test_an_async_handler_that_raises_fails_the_run_as_in_plain(distributed: Any) -> None:
    class Refusing(AsyncCallbackHandler):
        raise_error = True

        async def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            raise PermissionError("no model calls in this run")

    with pytest.raises(PermissionError, match="no model calls"):
        await chat_graph().compile().ainvoke(INPUTS, {"callbacks": [Refusing()]})
    graph = await distributed(chat_graph())
    with pytest.raises(PermissionError, match="no model calls"):
        await graph.ainvoke(INPUTS, {"callbacks": [Refusing()]})
