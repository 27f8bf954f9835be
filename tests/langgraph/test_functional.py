"""LangGraph's functional API distributed: an ``@entrypoint`` behaves as it does in plain LangGraph.

Each test builds one workflow twice (plain, and through ``distribute`` with its ``@task`` calls
served by an in-process worker on the test's pool: embedded, real redis-server, cluster) and
compares outputs, stream chunks, interrupts and how often each task ran.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.cache.memory import InMemoryCache
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.func import entrypoint, task
from langgraph.graph import START, StateGraph
from langgraph.types import CachePolicy, Command, Interrupt, RetryPolicy, interrupt
from nervenet_langgraph import distribute
from nervenet_langgraph.functional import DistributedEntrypoint
from typing_extensions import TypedDict

from nervenet import ConfigurationError, Pool, RemoteTaskError

if TYPE_CHECKING:
    from langgraph.func import _TaskFunction

P = ParamSpec("P")
T = TypeVar("T")


class TaskDecorator(Protocol):
    """What ``task(retry_policy=..., cache_policy=...)`` returns, typed per decorated function."""

    @overload
    def __call__(self, func: Callable[P, Coroutine[Any, Any, T]]) -> _TaskFunction[P, T]: ...
    @overload
    def __call__(self, func: Callable[P, T]) -> _TaskFunction[P, T]: ...


def task_with(
    *, retry_policy: RetryPolicy | None = None, cache_policy: CachePolicy[Any] | None = None
) -> TaskDecorator:
    """langgraph's ``task(**options)``, typed: that overload binds its P and T at this call (they
    are in ``cache_policy``'s type too), so mypy makes the decorator it returns take nothing."""
    return cast(TaskDecorator, task(retry_policy=retry_policy, cache_policy=cache_policy))


pytestmark = pytest.mark.langgraph

Build = Callable[[], Any]


@pytest.fixture
def both(pool: Pool) -> Callable[[Build], Any]:
    """``plain, distributed = await both(build)``: ``build()`` makes a fresh ``@entrypoint``
    (fresh tasks, fresh counters); the second is distributed and served by one worker."""
    made = 0

    async def make(build: Build) -> tuple[Any, DistributedEntrypoint]:
        nonlocal made
        made += 1
        plain = build()
        graph = distribute(build(), pool=pool, name=f"fn{made}")
        assert isinstance(graph, DistributedEntrypoint)
        if graph.nervenet_handlers():  # a worker refuses to serve nothing
            await pool.serve(graph)
        return plain, graph

    return make


def thread(name: str) -> RunnableConfig:
    return {"configurable": {"thread_id": name}}


def without_ids(chunk: Any) -> Any:
    """An interrupt's id hashes its checkpoint's (random) id: equal runs differ only there."""
    if isinstance(chunk, Interrupt):
        return ("Interrupt", without_ids(chunk.value))
    if isinstance(chunk, dict):
        return {k: without_ids(v) for k, v in chunk.items()}
    if isinstance(chunk, (list, tuple)):
        return type(chunk)(without_ids(v) for v in chunk)
    return chunk


async def test_parallel_task_futures_run_at_once_on_workers(both: Any) -> None:
    def build() -> Any:
        # Only three tasks running at the same time get past the barrier.
        barrier = threading.Barrier(3, timeout=10)

        @task
        def square(x: int) -> int:
            barrier.wait()
            return x * x

        @entrypoint()
        def squares(n: int) -> list[int]:
            return [f.result() for f in [square(i) for i in range(n)]]

        return squares

    plain, graph = await both(build)
    assert graph.nervenet_handlers().keys() == {"fn1/square"}
    expected = await asyncio.to_thread(plain.invoke, 3)
    assert await asyncio.to_thread(graph.invoke, 3) == expected == [0, 1, 4]
    chunks = await asyncio.to_thread(lambda: list(graph.stream(3, stream_mode="updates")))
    assert sorted(map(str, chunks)) == sorted(
        map(str, await asyncio.to_thread(lambda: list(plain.stream(3, stream_mode="updates"))))
    )


def interrupted_pipeline(calls: Counter[str]) -> Any:
    @task
    async def fetch(n: int) -> list[int]:
        calls["fetch"] += 1
        return list(range(n))

    @task
    async def approve(items: list[int]) -> str:
        calls["approve"] += 1
        # Two interrupts in one task: the second resume must not be answered by the first.
        first = interrupt({"approve": items})
        second = interrupt("sure?")
        return f"{first}/{second}"

    @entrypoint(checkpointer=InMemorySaver())
    async def pipeline(n: int) -> dict[str, Any]:
        items = await fetch(n)
        verdict = await approve(items)
        return {"items": items, "verdict": verdict}

    return pipeline


async def test_interrupts_inside_a_task_and_resume_match_plain_and_finished_tasks_do_not_rerun(
    both: Any,
) -> None:
    plain_calls: Counter[str] = Counter()
    dist_calls: Counter[str] = Counter()
    builds: Iterator[Callable[[], Any]] = iter(
        [lambda: interrupted_pipeline(plain_calls), lambda: interrupted_pipeline(dist_calls)]
    )
    plain, graph = await both(lambda: next(builds)())
    for workflow in (plain, graph):
        steps = without_ids(
            [
                [c async for c in workflow.astream(3, thread("t"))],
                [c async for c in workflow.astream(Command(resume="yes"), thread("t"))],
                [c async for c in workflow.astream(Command(resume="very"), thread("t"))],
            ]
        )
        if workflow is plain:
            expected = steps
        else:
            assert steps == expected
    assert expected[-1][-1] == {"pipeline": {"items": [0, 1, 2], "verdict": "yes/very"}}
    assert dist_calls == plain_calls == Counter(fetch=1, approve=3)


class Flaky(Exception):
    """Retried by the policy below: it must arrive on the coordinator as its own type."""


def retried(attempts: Counter[str]) -> Any:
    @task_with(retry_policy=RetryPolicy(retry_on=Flaky, initial_interval=0.01, jitter=False))
    def unreliable(x: int) -> int:
        attempts["unreliable"] += 1
        if attempts["unreliable"] < 3:
            raise Flaky(f"attempt {attempts['unreliable']}")
        return x + 1

    @task_with(retry_policy=RetryPolicy(retry_on=Flaky, initial_interval=0.01))
    def broken(x: int) -> int:
        attempts["broken"] += 1
        raise KeyError(x)  # not retried: fails the run as in plain

    @entrypoint()
    def run(x: int) -> int:
        value = unreliable(x).result()
        return broken(value).result() if x < 0 else value

    return run


async def test_retry_policy_retries_by_exception_type_as_plain(both: Any) -> None:
    plain_attempts: Counter[str] = Counter()
    dist_attempts: Counter[str] = Counter()
    builds: Iterator[Callable[[], Any]] = iter(
        [lambda: retried(plain_attempts), lambda: retried(dist_attempts)]
    )
    plain, graph = await both(lambda: next(builds)())
    assert await graph.ainvoke(1) == await plain.ainvoke(1) == 2
    assert dist_attempts == plain_attempts == Counter(unreliable=3)
    for workflow in (plain, graph):
        with pytest.raises(KeyError):
            await workflow.ainvoke(-1)
    assert dist_attempts == plain_attempts == Counter(unreliable=4, broken=1)


def cached(calls: Counter[str]) -> Any:
    @task_with(cache_policy=CachePolicy())
    async def expensive(x: int) -> int:
        calls[f"expensive:{x}"] += 1
        return x * 10

    @entrypoint(cache=InMemoryCache())
    async def run(xs: list[int]) -> list[int]:
        return list(await asyncio.gather(*(expensive(x) for x in xs)))

    return run


async def test_cache_policy_answers_repeated_task_calls_as_plain(both: Any) -> None:
    plain_calls: Counter[str] = Counter()
    dist_calls: Counter[str] = Counter()
    builds: Iterator[Callable[[], Any]] = iter(
        [lambda: cached(plain_calls), lambda: cached(dist_calls)]
    )
    plain, graph = await both(lambda: next(builds)())
    for xs in ([1, 2], [2, 3], [1, 3]):
        assert await graph.ainvoke(xs) == await plain.ainvoke(xs)
    assert dist_calls == plain_calls == Counter({f"expensive:{x}": 1 for x in (1, 2, 3)})


def with_previous() -> Any:
    @task
    def shout(text: str, config: RunnableConfig) -> str:
        get_stream_writer()({"shouting": text})
        return f"{text.upper()}@{config['configurable']['thread_id']}"

    @entrypoint(checkpointer=InMemorySaver())
    def remember(
        text: str, *, previous: list[str] | None = None
    ) -> entrypoint.final[int, list[str]]:
        # (langgraph injects `config`; its types make the caller pass it.)
        said = [*(previous or []), shout(text).result()]  # type: ignore[call-arg]
        return entrypoint.final(value=len(said), save=said)

    return remember


async def test_previous_final_and_custom_stream_from_a_task_match_plain(both: Any) -> None:
    def stream(workflow: Any, text: str) -> list[Any]:
        return list(workflow.stream(text, thread("p"), stream_mode=["custom", "updates", "values"]))

    plain, graph = await both(with_previous)
    for workflow in (plain, graph):
        chunks = [await asyncio.to_thread(stream, workflow, text) for text in ("hi", "there")]
        state = await workflow.aget_state(thread("p"))
        if workflow is plain:
            expected, expected_state = chunks, state.values
        else:
            assert chunks == expected
            assert state.values == expected_state
    assert expected[-1][-1] == ("values", 2)


async def test_a_task_that_calls_tasks_runs_on_the_coordinator_and_its_calls_on_workers(
    both: Any,
) -> None:
    def build() -> Any:
        @task
        def leaf(x: int) -> int:
            return x + 1

        @task
        def branch(x: int) -> int:
            return sum(f.result() for f in [leaf(x), leaf(x * 10)])

        @entrypoint(checkpointer=InMemorySaver())
        def tree(x: int) -> int:
            return branch(x).result()

        return tree

    plain, graph = await both(build)
    assert set(graph.nervenet_handlers()) == {"fn1/leaf"}
    expected = await asyncio.to_thread(lambda: list(plain.stream(2, thread("b"))))
    got = await asyncio.to_thread(lambda: list(graph.stream(2, thread("b"))))
    assert sorted(map(str, got)) == sorted(map(str, expected))
    assert got[-1] == {"tree": 24}


async def test_a_task_no_worker_can_have_is_refused_naming_it(both: Any) -> None:
    def build() -> Any:
        @entrypoint()
        def adhoc(x: int) -> int:
            @task  # a new function per run, closing over the run's locals
            def inner() -> int:
                return x

            return inner().result()

        return adhoc

    _, graph = await both(build)
    with pytest.raises(ConfigurationError, match=r"'inner'.*distribute\(..., tasks="):
        await graph.ainvoke(1)


class Doc(TypedDict):
    text: str


@task
def _upper(text: str) -> str:
    return text.upper()


async def test_a_task_called_by_a_graph_node_is_a_task_of_the_run_on_a_worker(
    pool: Pool,
) -> None:
    """The node orchestrates (it runs in the run's loop, like an entrypoint body); the task it
    calls is dispatched, checkpointed and streamed as a task of the run, as in plain."""

    def node(state: Doc) -> Doc:
        return {"text": _upper(state["text"]).result()}

    def build() -> Any:
        return StateGraph(Doc).add_node("node", node).add_edge(START, "node")

    graph = distribute(build(), pool=pool, name="node-task", checkpointer=InMemorySaver())
    assert set(graph.nervenet_handlers()) == {"node-task/@task/_upper"}
    await pool.serve(graph)
    plain = build().compile(checkpointer=InMemorySaver())
    for workflow in (plain, graph):
        chunks = [c async for c in workflow.astream({"text": "a"}, thread("n"))]
        history = [s.values async for s in workflow.aget_state_history(thread("n"))]
        if workflow is plain:
            expected = (chunks, history)
        else:
            assert (chunks, history) == expected
    assert expected[0] == [{"_upper": "A"}, {"node": {"text": "A"}}]


def chatty() -> Any:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="one two three", id="ai-1")]))

    @task
    async def reply(question: str) -> str:
        message = await model.ainvoke([HumanMessage(content=question, id="q")])
        return str(message.content)

    @entrypoint()
    async def chat(question: str) -> str:
        return await reply(question)

    return chat


async def test_llm_tokens_from_a_task_on_a_worker_stream_as_plain(both: Any) -> None:
    plain, graph = await both(chatty)
    expected = [c async for c in plain.astream("count?", stream_mode="messages")]
    got = [c async for c in graph.astream("count?", stream_mode="messages")]
    assert [(m.content, meta["langgraph_node"]) for m, meta in got] == [
        (m.content, meta["langgraph_node"]) for m, meta in expected
    ]
    # Token by token where plain LangGraph streams a task's tokens (1.2.24; 1.2.15 streams none).
    assert len(got) == len(expected)


async def test_a_task_returning_what_cannot_cross_fails_naming_the_task(both: Any) -> None:
    def build() -> Any:
        @task
        async def leaky() -> Any:
            return threading.Lock()

        @entrypoint()
        async def run(_: int) -> Any:
            return await leaky()

        return run

    _, graph = await both(build)
    with pytest.raises(RemoteTaskError, match=r"fn1/leaky.*not msgpack serializable"):
        await graph.ainvoke(1)


def _lower(text: str) -> str:
    return text.lower()


def _title(text: str) -> str:
    return text.title()


class Toolbox:
    """Tasks held by an object: found only if listed in ``distribute(..., tasks=[...])``."""

    def __init__(self) -> None:
        self.title = task(_title)


async def test_tasks_in_a_registry_are_found_and_tasks_on_an_object_are_listed(
    pool: Pool,
) -> None:
    toolbox = Toolbox()
    registry = {"lower": task(_lower)}

    @entrypoint()
    def run(text: str) -> list[str]:
        return [registry["lower"](text).result(), toolbox.title(text).result()]

    graph = distribute(run, pool=pool, name="tools", tasks=[toolbox.title])
    assert set(graph.nervenet_handlers()) == {"tools/_lower", "tools/_title"}
    await pool.serve(graph)
    assert await asyncio.to_thread(graph.invoke, "aB c") == ["ab c", "Ab C"]
    with pytest.raises(ConfigurationError, match="@entrypoint"):
        distribute(StateGraph(Doc), pool=pool, name="no", tasks=[toolbox.title])


async def test_per_task_queue_and_limits_come_from_distribute_nodes(pool: Pool) -> None:
    @entrypoint()
    def run(text: str) -> str:
        return _upper(text).result()

    graph = distribute(run, pool=pool, name="routed", nodes={"_upper": {"queue": "gpu"}})
    assert graph.nervenet_task_options()["routed/_upper"].queue == "gpu"
    with pytest.raises(ConfigurationError, match="its tasks are \\['_upper'\\]"):
        distribute(run, pool=pool, name="typo", nodes={"upper": {"queue": "gpu"}})
