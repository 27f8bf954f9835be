"""A distributed graph behaves exactly like the same builder in plain LangGraph.

Each test runs one builder both ways (the ``pool`` fixture is parametrized over the embedded pool
and a real redis-server) and compares final states, stream chunks in order, and interrupts.
"""

from __future__ import annotations

import asyncio
import operator
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import pytest
from fast_settings import FAST
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command, RetryPolicy, Send, StreamWriter, interrupt
from nervenet_langgraph import distribute
from pydantic import BaseModel

from nervenet import Pool

pytestmark = pytest.mark.langgraph


async def collect(
    graph: Any, inputs: Any, config: RunnableConfig | None = None, **kw: Any
) -> list[Any]:
    return [chunk async for chunk in graph.astream(inputs, config, **kw)]


class Counter(TypedDict):
    value: int
    trail: Annotated[list[str], operator.add]


def counter_graph() -> StateGraph[Any]:
    def double(state: Counter) -> dict[str, Any]:
        return {"value": state["value"] * 2, "trail": ["double"]}

    def increment(state: Counter) -> dict[str, Any]:
        return {"value": state["value"] + 1, "trail": ["increment"]}

    def route(state: Counter) -> str:
        return "increment" if state["value"] < 10 else END

    builder = StateGraph(Counter)
    builder.add_node("double", double)
    builder.add_node("increment", increment)
    builder.add_edge(START, "double")
    builder.add_conditional_edges("double", route, ["increment", END])
    builder.add_edge("increment", "double")
    return builder


async def test_reducers_and_conditional_edges_match_plain(distributed: Any) -> None:
    plain = counter_graph().compile()
    graph = await distributed(counter_graph())
    for start in (1, 3, 20):
        expected = await collect(plain, {"value": start, "trail": []}, stream_mode="updates")
        assert (
            await collect(graph, {"value": start, "trail": []}, stream_mode="updates") == expected
        )


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def chat_graph() -> StateGraph[Any]:
    def respond(state: Chat) -> dict[str, Any]:
        last = state["messages"][-1]
        return {"messages": [AIMessage(content=f"echo: {last.content}", id="reply")]}

    def revise(state: Chat) -> dict[str, Any]:
        # Same id: add_messages replaces the earlier message instead of appending.
        return {"messages": [AIMessage(content="revised", id="reply")]}

    builder = StateGraph(Chat)
    builder.add_node("respond", respond)
    builder.add_node("revise", revise)
    builder.add_edge(START, "respond")
    builder.add_edge("respond", "revise")
    return builder


async def test_add_messages_replaces_by_id_like_plain(distributed: Any) -> None:
    inputs = {"messages": [HumanMessage(content="hi", id="h1")]}
    expected = await chat_graph().compile().ainvoke(inputs)
    result = await (await distributed(chat_graph())).ainvoke(inputs)
    assert result == expected
    assert [m.content for m in result["messages"]] == ["hi", "revised"]


def command_graph() -> StateGraph[Any]:
    def decide(state: Counter) -> Command[str]:
        target = "big" if state["value"] > 5 else "small"
        return Command(goto=target, update={"trail": [f"decide->{target}"]})

    def big(state: Counter) -> dict[str, Any]:
        return {"trail": ["big"]}

    def small(state: Counter) -> dict[str, Any]:
        return {"trail": ["small"]}

    builder = StateGraph(Counter)
    builder.add_node("decide", decide, destinations=("big", "small"))
    builder.add_node("big", big)
    builder.add_node("small", small)
    builder.add_edge(START, "decide")
    return builder


async def test_command_goto_and_update_match_plain(distributed: Any) -> None:
    graph = await distributed(command_graph())
    for value in (1, 9):
        inputs: dict[str, Any] = {"value": value, "trail": []}
        assert await graph.ainvoke(inputs) == await command_graph().compile().ainvoke(inputs)


def parent_command_graph() -> StateGraph[Any]:
    def escalate(state: Counter) -> Command[str]:
        return Command(graph=Command.PARENT, goto="handled", update={"trail": ["escalated"]})

    child = StateGraph(Counter)
    child.add_node("escalate", escalate)
    child.add_edge(START, "escalate")

    def handled(state: Counter) -> dict[str, Any]:
        return {"trail": ["handled"]}

    parent = StateGraph(Counter)
    parent.add_node("child", child.compile(), destinations=("handled",))
    parent.add_node("handled", handled)
    parent.add_edge(START, "child")
    return parent


async def test_command_parent_from_a_subgraph_matches_plain(distributed: Any) -> None:
    inputs = {"value": 0, "trail": []}
    expected = await parent_command_graph().compile().ainvoke(inputs)
    assert await (await distributed(parent_command_graph())).ainvoke(inputs) == expected
    assert expected["trail"] == ["escalated", "handled"]


class FanOut(TypedDict):
    topics: list[str]
    results: Annotated[list[str], operator.add]


BRANCH_SECONDS = 0.4


def fan_out_graph() -> StateGraph[Any]:
    def plan(state: FanOut) -> list[Send]:
        return [Send("research", {"topic": t}) for t in state["topics"]]

    async def research(state: dict[str, str]) -> dict[str, Any]:
        await asyncio.sleep(BRANCH_SECONDS)
        return {"results": [state["topic"].upper()]}

    builder = StateGraph(FanOut)
    # A node that Send gives a plain dict: langgraph runs it, but its add_node types a node's
    # input as a state schema (TypedDict, dataclass or model), which would change the graph.
    # mypy reports it or not depending on its cache (unused-ignore covers the runs that don't).
    builder.add_node("research", research)  # type: ignore[type-var, unused-ignore]
    builder.add_conditional_edges(START, plan, ["research"])
    return builder


async def test_send_branches_run_in_parallel_on_different_workers(distributed: Any) -> None:
    topics = ["a", "b", "c", "d"]
    # One task at a time per worker: finishing in less than two branches' time takes them all.
    graph = await distributed(fan_out_graph(), workers=len(topics), concurrency=1)
    started = time.perf_counter()
    result = await graph.ainvoke({"topics": topics, "results": []})
    elapsed = time.perf_counter() - started
    assert result == await fan_out_graph().compile().ainvoke({"topics": topics, "results": []})
    assert elapsed < BRANCH_SECONDS * 2, f"{len(topics)} branches took {elapsed:.2f} s"


SYNC_BRANCHES = 64


def sync_fan_out_graph() -> StateGraph[Any]:
    def plan(state: FanOut) -> list[Send]:
        return [Send("research", {"topic": t}) for t in state["topics"]]

    def research(state: dict[str, str]) -> dict[str, Any]:  # a plain def: runs in a thread
        time.sleep(1.0)  # e.g. a blocking llm.invoke
        return {"results": [state["topic"]]}

    builder = StateGraph(FanOut)
    builder.add_node("research", research)  # type: ignore[type-var, unused-ignore]  # (see above)
    builder.add_conditional_edges(START, plan, ["research"])
    return builder


async def test_one_worker_runs_as_many_sync_nodes_at_once_as_its_concurrency(
    pool: Pool,
) -> None:
    graph = distribute(sync_fan_out_graph(), pool=pool, name="sync-fan-out")
    await pool.serve(graph, concurrency=SYNC_BRANCHES)
    topics = [f"t{n}" for n in range(SYNC_BRANCHES)]

    started = time.perf_counter()
    result = await graph.ainvoke({"topics": topics, "results": []})
    elapsed = time.perf_counter() - started

    assert sorted(result["results"]) == sorted(topics)
    # asyncio's default executor (6 threads here) took 11 waves of 1 s.
    assert elapsed < 2.5, f"{SYNC_BRANCHES} one-second sync nodes took {elapsed:.1f} s"


class Flaky(Exception):
    pass


def retry_graph(calls: list[str], error: type[Exception]) -> StateGraph[Any]:
    def unstable(state: Counter) -> dict[str, Any]:
        calls.append("call")
        if len(calls) < 3:
            raise error("not yet")
        return {"value": len(calls)}

    builder = StateGraph(Counter)
    builder.add_node(
        "unstable",
        unstable,
        retry_policy=RetryPolicy(initial_interval=0.01, max_attempts=5, jitter=False),
    )
    builder.add_edge(START, "unstable")
    return builder


async def test_retry_policy_retries_what_plain_retries(distributed: Any) -> None:
    calls: list[str] = []
    result = await (await distributed(retry_graph(calls, Flaky))).ainvoke({"value": 0, "trail": []})
    assert result["value"] == 3
    assert len(calls) == 3


async def test_value_error_keeps_its_type_and_is_not_retried(distributed: Any) -> None:
    calls: list[str] = []
    graph = await distributed(retry_graph(calls, ValueError))
    with pytest.raises(ValueError, match="not yet") as raised:
        await graph.ainvoke({"value": 0, "trail": []})
    assert calls == ["call"], "LangGraph's default retry_on does not retry ValueError"
    assert any("nervenet worker" in note for note in raised.value.__notes__)


def interrupting_subgraph_graph() -> StateGraph[Any]:
    def ask(state: Counter) -> dict[str, Any]:
        first = interrupt("first?")
        second = interrupt("second?")
        return {"trail": [f"{first}+{second}"]}

    child = StateGraph(Counter)
    child.add_node("ask", ask)
    child.add_edge(START, "ask")

    def finish(state: Counter) -> dict[str, Any]:
        return {"trail": ["finish"]}

    parent = StateGraph(Counter)
    parent.add_node("child", child.compile())
    parent.add_node("finish", finish)
    parent.add_edge(START, "child")
    parent.add_edge("child", "finish")
    return parent


def _without_interrupt_ids(chunks: list[Any]) -> list[Any]:
    """Interrupt ids hash the checkpoint namespace, which holds task ids that are random per run."""
    return [repr(c).split("id=")[0] if "Interrupt(" in repr(c) else c for c in chunks]


async def test_interrupts_inside_subgraphs_and_resume_match_plain(distributed: Any) -> None:
    plain = interrupting_subgraph_graph().compile(checkpointer=InMemorySaver())
    graph = await distributed(interrupting_subgraph_graph(), checkpointer=InMemorySaver())
    outputs: list[list[Any]] = []
    for g in (plain, graph):
        config: RunnableConfig = {"configurable": {"thread_id": "t"}}
        run: list[Any] = [await collect(g, {"value": 0, "trail": []}, config, subgraphs=True)]
        for answer in ("yes", "no"):
            run.append(await collect(g, Command(resume=answer), config, subgraphs=True))
        run.append((await g.aget_state(config)).values)
        outputs.append(run)
    plain_run, distributed_run = outputs
    assert distributed_run[-1] == plain_run[-1] == {"value": 0, "trail": ["yes+no", "finish"]}
    for plain_chunks, dist_chunks in zip(plain_run[:-1], distributed_run[:-1], strict=True):
        plain_shape = [(ns[0].split(":")[0] if ns else "", c) for ns, c in plain_chunks]
        dist_shape = [(ns[0].split(":")[0] if ns else "", c) for ns, c in dist_chunks]
        assert _without_interrupt_ids(dist_shape) == _without_interrupt_ids(plain_shape)


@dataclass
class Settings:
    greeting: str


def injection_graph(store: InMemoryStore | None = None) -> StateGraph[Any, Settings]:
    def with_config(state: Counter, config: RunnableConfig) -> dict[str, Any]:
        user = config["configurable"]["user"]
        same = get_config()["configurable"]["user"] == user
        return {"trail": [f"config:{user}:{same}"]}

    def with_runtime(state: Counter, runtime: Runtime[Settings]) -> dict[str, Any]:
        info = runtime.execution_info
        assert info is not None  # (set for every node a graph runs)
        return {"trail": [f"runtime:{runtime.context.greeting}:{info.node_attempt}"]}

    def with_writer(state: Counter, writer: StreamWriter) -> dict[str, Any]:
        writer({"progress": 1})
        get_stream_writer()({"progress": 2})
        return {"trail": ["writer"]}

    builder = StateGraph(Counter, context_schema=Settings)
    builder.add_node("with_config", with_config)
    builder.add_node("with_runtime", with_runtime)
    builder.add_node("with_writer", with_writer)
    builder.add_edge(START, "with_config")
    builder.add_edge("with_config", "with_runtime")
    builder.add_edge("with_runtime", "with_writer")
    return builder


@pytest.mark.parametrize("modes", [["values"], ["updates", "custom"], ["custom"]])
async def test_injected_config_runtime_and_writer_match_plain(
    distributed: Any, modes: list[str]
) -> None:
    config: RunnableConfig = {"configurable": {"user": "ada"}}
    inputs = {"value": 0, "trail": []}
    kwargs = {"stream_mode": modes, "context": Settings(greeting="hello")}
    expected = await collect(injection_graph().compile(), inputs, config, **kwargs)
    graph = await distributed(injection_graph())
    assert await collect(graph, inputs, config, **kwargs) == expected


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_sync_invoke_and_stream_match_plain(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "embedded":
        pool = Pool.local(settings=FAST)
    else:
        pool = Pool.from_url(request.getfixturevalue("redis_url"), settings=FAST)
    try:
        graph = distribute(counter_graph(), pool=pool, name="sync-counter")
        pool.call_sync(lambda: pool.serve(graph))
        plain = counter_graph().compile()
        inputs = {"value": 2, "trail": []}
        assert graph.invoke(inputs) == plain.invoke(inputs)
        assert list(graph.stream(inputs, stream_mode="updates")) == list(
            plain.stream(inputs, stream_mode="updates")
        )
    finally:
        pool.close()


def token_graph() -> StateGraph[Any]:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="one two three", id="ai-1")]))

    async def call_model(state: Chat) -> dict[str, Any]:
        reply = await model.ainvoke(state["messages"])
        return {"messages": [reply]}

    builder = StateGraph(Chat)
    builder.add_node("call_model", call_model)
    builder.add_edge(START, "call_model")
    return builder


async def test_llm_tokens_from_the_worker_stream_in_order_with_metadata(distributed: Any) -> None:
    inputs = {"messages": [HumanMessage(content="count", id="h1")]}
    expected = await collect(token_graph().compile(), inputs, stream_mode="messages")
    got = await collect(await distributed(token_graph()), inputs, stream_mode="messages")
    assert [m.content for m, _ in got] == [m.content for m, _ in expected]
    assert len(got) > 1, "tokens, not one whole message"
    keys = ("langgraph_node", "langgraph_step", "langgraph_triggers")
    assert [{k: meta[k] for k in keys} for _, meta in got] == [
        {k: meta[k] for k in keys} for _, meta in expected
    ]


class PydanticState(BaseModel):
    count: int = 0
    notes: Annotated[list[str], operator.add] = []


@dataclass
class DataclassState:
    count: int = 0
    notes: Annotated[list[str], operator.add] = None  # type: ignore[assignment]


@pytest.mark.parametrize("schema", [PydanticState, DataclassState])
async def test_pydantic_and_dataclass_state_match_plain(distributed: Any, schema: type) -> None:
    def bump(state: Any) -> dict[str, Any]:
        return {"count": state.count + 1, "notes": [type(state).__name__]}

    def build() -> StateGraph[Any]:
        builder: StateGraph[Any] = StateGraph(schema)
        builder.add_node("bump", bump)
        builder.add_edge(START, "bump")
        return builder

    inputs = schema(count=1, notes=[])
    assert await (await distributed(build())).ainvoke(inputs) == await build().compile().ainvoke(
        inputs
    )


async def test_store_is_reachable_from_nodes_on_in_process_workers(distributed: Any) -> None:
    # The workers are in this process on every backend, so an InMemoryStore is theirs too.
    store = InMemoryStore()

    def remember(state: Counter, runtime: Runtime[None]) -> dict[str, Any]:
        assert runtime.store is not None
        runtime.store.put(("notes",), "last", {"value": state["value"]})
        return {"trail": ["remembered"]}

    builder = StateGraph(Counter)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    graph = await distributed(builder, store=store)
    await graph.ainvoke({"value": 7, "trail": []})
    item = store.get(("notes",), "last")
    assert item is not None and item.value == {"value": 7}


def _task_events(chunks: list[Any]) -> list[Any]:
    """Task start/result events without what is random per run (ids, timestamps, checkpoints)."""
    events = []
    for mode, payload in chunks:
        if mode == "debug":
            mode, payload = payload["type"], payload["payload"]
        if mode in ("task", "task_result", "tasks"):
            events.append(
                {k: v for k, v in payload.items() if k in ("name", "input", "result", "error")}
            )
    return events


@pytest.mark.parametrize("mode", ["tasks", "debug"])
async def test_tasks_and_debug_streams_match_plain(distributed: Any, mode: str) -> None:
    inputs = {"value": 3, "trail": []}
    expected = await collect(counter_graph().compile(), inputs, stream_mode=[mode])
    got = await collect(await distributed(counter_graph()), inputs, stream_mode=[mode])
    assert _task_events(got) == _task_events(expected)
    assert len(_task_events(got)) > 2


async def test_get_state_update_state_and_history_match_plain(distributed: Any) -> None:
    results = []
    for graph in (
        counter_graph().compile(checkpointer=InMemorySaver()),
        await distributed(counter_graph(), checkpointer=InMemorySaver()),
    ):
        config: RunnableConfig = {"configurable": {"thread_id": "history"}}
        await graph.ainvoke({"value": 1, "trail": []}, config)
        await graph.aupdate_state(config, {"trail": ["edited"]}, as_node="increment")
        await graph.ainvoke(None, config)
        state = await graph.aget_state(config)
        history = [s.next async for s in graph.aget_state_history(config)]
        results.append((state.values, state.next, history))
    assert results[1] == results[0]
