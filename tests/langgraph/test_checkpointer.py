"""RedisSaver behaves like LangGraph's InMemorySaver, on a real redis-server, on a 3-primary Redis
Cluster and on fakeredis.

Graph tests run one scenario twice, once checkpointed in memory and once in Redis, through the
graph's sync methods and through its async ones, and compare what a user can see: states, pending
interrupts, and the whole history. Checkpoint, task and interrupt ids differ between any two runs,
so summaries leave them out.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypedDict
from uuid import uuid4

import pytest

pytest.importorskip("langgraph")

import fakeredis
import redis
import redis.asyncio as aioredis
import redis.cluster
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.types import ERROR
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, StateSnapshot, interrupt
from nervenet_langgraph.checkpoint import RedisSaver

from nervenet.errors import ConfigurationError, PoolConnectionError
from nervenet.keys import Keys
from nervenet.testing import RedisClusterServers, free_port

pytestmark = pytest.mark.langgraph


# --- backends ---------------------------------------------------------------------------------
@dataclass
class Backend:
    """A Redis to checkpoint into, with a raw client to look at what the saver left there."""

    raw: redis.Redis | redis.cluster.RedisCluster
    build: Callable[..., RedisSaver]
    savers: list[RedisSaver] = field(default_factory=list)

    def saver(self, **options: Any) -> RedisSaver:
        saver = self.build(**options)
        self.savers.append(saver)
        return saver

    def checkpoint_keys(self) -> list[str]:
        # On a cluster client scan_iter walks every primary.
        return sorted(k.decode() for k in self.raw.scan_iter(match="nn:cp:*"))

    def node_of(self, key: str) -> str:
        """Which server holds ``key``: one of several only on a cluster."""
        if isinstance(self.raw, redis.cluster.RedisCluster):
            # (redis-py leaves RedisCluster's node lookups unannotated.)
            return str(self.raw.get_node_from_key(key).name)  # type: ignore[no-untyped-call]
        return "the server"

    @property
    def primaries(self) -> int:
        if isinstance(self.raw, redis.cluster.RedisCluster):
            return len(self.raw.get_primaries())  # type: ignore[no-untyped-call]
        return 1


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster), "fakeredis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        backend = Backend(
            raw=redis.Redis.from_url(url),
            build=lambda **options: RedisSaver.from_url(url, **options),
        )
    elif request.param == "cluster":
        # The URL of one node, as a user would give it: the saver finds out it is a cluster.
        cluster_url = request.getfixturevalue("cluster_url")
        backend = Backend(
            raw=redis.cluster.RedisCluster.from_url(cluster_url),
            build=lambda **options: RedisSaver.from_url(cluster_url, **options),
        )
    else:
        server = fakeredis.FakeServer()

        def build(*, namespace: str = "nn", **options: Any) -> RedisSaver:
            return RedisSaver(
                sync_client=fakeredis.FakeRedis(server=server),
                async_client=fakeredis.FakeAsyncRedis(server=server),
                keys=Keys(namespace),
                **options,
            )

        backend = Backend(raw=fakeredis.FakeRedis(server=server), build=build)
    yield backend
    for saver in backend.savers:
        await saver.aclose()
    backend.raw.close()


@pytest.fixture
def saver(backend: Backend) -> RedisSaver:
    return backend.saver()


# --- driving graphs through their sync or async API ------------------------------------------
Config = RunnableConfig | dict[str, Any]
"""A graph's config: the tests' plain dicts, or the ones snapshots and updates give back."""


class Api:
    """A compiled graph's sync methods, or its async ones, behind one awaitable interface."""

    def __init__(self, use_async: bool) -> None:
        self.use_async = use_async

    async def invoke(self, graph: Any, inputs: Any, config: Config) -> Any:
        if self.use_async:
            return await graph.ainvoke(inputs, config)
        return graph.invoke(inputs, config)

    async def state(self, graph: Any, config: Config, **kw: Any) -> StateSnapshot:
        snapshot: StateSnapshot
        if self.use_async:
            snapshot = await graph.aget_state(config, **kw)
        else:
            snapshot = graph.get_state(config, **kw)
        return snapshot

    async def history(self, graph: Any, config: Config) -> list[StateSnapshot]:
        if self.use_async:
            return [s async for s in graph.aget_state_history(config)]
        return list(graph.get_state_history(config))

    async def update(self, graph: Any, config: Config, values: Any) -> Any:
        if self.use_async:
            return await graph.aupdate_state(config, values)
        return graph.update_state(config, values)

    async def delete_thread(self, saver: BaseCheckpointSaver[Any], thread_id: str) -> None:
        if self.use_async:
            await saver.adelete_thread(thread_id)
        else:
            saver.delete_thread(thread_id)

    async def thread_ids(self, saver: BaseCheckpointSaver[Any]) -> list[str]:
        """The thread of every checkpoint ``list(None)`` gives, in its order."""
        saved = [t async for t in saver.alist(None)] if self.use_async else list(saver.list(None))
        return [t.config["configurable"]["thread_id"] for t in saved]


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Api:
    return Api(use_async=request.param == "async")


def summary(snapshot: StateSnapshot) -> tuple[Any, ...]:
    """What a user sees of a snapshot, minus the ids that differ between runs."""
    tasks = tuple(
        (
            t.name,
            tuple(i.value for i in t.interrupts),
            summary(t.state) if isinstance(t.state, StateSnapshot) else None,
        )
        for t in snapshot.tasks
    )
    return (
        snapshot.values,
        snapshot.next,
        snapshot.metadata and snapshot.metadata.get("source"),
        snapshot.metadata and snapshot.metadata.get("step"),
        tuple(i.value for i in snapshot.interrupts),
        tasks,
    )


Scenario = Callable[[Any, Api, dict[str, Any]], Awaitable[Any]]


async def same_as_in_memory(
    builder: StateGraph[Any], scenario: Scenario, api: Api, saver: RedisSaver
) -> Any:
    """Run ``scenario`` on ``builder`` checkpointed in memory and in Redis; both must agree."""
    results = []
    for checkpointer in (InMemorySaver(), saver):
        graph = builder.compile(checkpointer=checkpointer)
        config = {"configurable": {"thread_id": f"t-{uuid4()}"}}
        results.append(await scenario(graph, api, config))
    in_memory, in_redis = results
    assert in_redis == in_memory
    return in_redis


# --- graphs -----------------------------------------------------------------------------------
class Log(TypedDict):
    log: Annotated[list[str], operator.add]


class LogNode(Protocol):
    """A node of a Log graph (as langgraph's add_node takes it: called with ``state``)."""

    def __call__(self, state: Log) -> dict[str, list[str]]: ...


def step(name: str) -> LogNode:
    def node(state: Log) -> dict[str, list[str]]:
        return {"log": [name]}

    return node


def parallel_graph() -> StateGraph[Any]:
    """START fans out to a and b, which join in c."""
    builder = StateGraph(Log)
    for name in ("a", "b", "c"):
        builder.add_node(name, step(name))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge(["a", "b"], "c")
    builder.add_edge("c", END)
    return builder


def chain_graph() -> StateGraph[Any]:
    builder = StateGraph(Log)
    for name in ("a", "b", "c"):
        builder.add_node(name, step(name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder


def approval_graph() -> StateGraph[Any]:
    def review(state: Log) -> dict[str, list[str]]:
        verdict = interrupt({"question": "approve?", "so_far": state["log"]})
        return {"log": [f"review:{verdict}"]}

    builder = StateGraph(Log)
    builder.add_node("draft", step("draft"))
    builder.add_node("review", review)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", END)
    return builder


def graph_with_subgraph() -> StateGraph[Any]:
    builder = StateGraph(Log)
    builder.add_node("prepare", step("prepare"))
    builder.add_node("inner", approval_graph().compile())
    builder.add_node("publish", step("publish"))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "inner")
    builder.add_edge("inner", "publish")
    builder.add_edge("publish", END)
    return builder


# --- real graphs give what InMemorySaver gives ------------------------------------------------
async def test_parallel_branches_give_the_same_state_and_history(
    api: Api, saver: RedisSaver
) -> None:
    async def scenario(graph: Any, api: Api, config: dict[str, Any]) -> Any:
        result = await api.invoke(graph, {"log": ["start"]}, config)
        return result, [summary(s) for s in await api.history(graph, config)]

    result, history = await same_as_in_memory(parallel_graph(), scenario, api, saver)
    assert sorted(result["log"]) == ["a", "b", "c", "start"]
    assert len(history) == 4


async def test_interrupt_then_resume_gives_the_same_states(api: Api, saver: RedisSaver) -> None:
    async def scenario(graph: Any, api: Api, config: dict[str, Any]) -> Any:
        paused = await api.invoke(graph, {"log": []}, config)
        waiting = summary(await api.state(graph, config))
        done = await api.invoke(graph, Command(resume="yes"), config)
        history = [summary(s) for s in await api.history(graph, config)]
        return [i.value for i in paused["__interrupt__"]], waiting, done, history

    asked, waiting, done, _ = await same_as_in_memory(approval_graph(), scenario, api, saver)
    assert asked == [{"question": "approve?", "so_far": ["draft"]}]
    assert waiting[1] == ("review",)
    assert done == {"log": ["draft", "review:yes"]}


async def test_time_travel_to_an_earlier_checkpoint_replays_and_forks_the_same_way(
    api: Api, saver: RedisSaver
) -> None:
    async def scenario(graph: Any, api: Api, config: dict[str, Any]) -> Any:
        await api.invoke(graph, {"log": []}, config)
        before_b = next(s for s in await api.history(graph, config) if s.next == ("b",))
        replayed = await api.invoke(graph, None, before_b.config)
        fork = await api.update(graph, before_b.config, {"log": ["edited"]})
        forked = await api.invoke(graph, None, fork)
        history = [summary(s) for s in await api.history(graph, config)]
        return replayed, forked, summary(await api.state(graph, config)), history

    replayed, forked, _, _ = await same_as_in_memory(chain_graph(), scenario, api, saver)
    assert replayed == {"log": ["a", "b", "c"]}
    assert forked == {"log": ["a", "edited", "b", "c"]}


async def test_subgraph_checkpoints_are_kept_in_their_own_namespace(
    api: Api, saver: RedisSaver
) -> None:
    async def scenario(graph: Any, api: Api, config: dict[str, Any]) -> Any:
        await api.invoke(graph, {"log": []}, config)
        (task,) = (await api.state(graph, config, subgraphs=True)).tasks
        assert isinstance(task.state, StateSnapshot)  # (subgraphs=True: the subgraph's own)
        inside = summary(task.state)
        done = await api.invoke(graph, Command(resume="ok"), config)
        namespaces: dict[str, int] = {}
        for saved in graph.checkpointer.list({"configurable": config["configurable"]}):
            top = saved.config["configurable"]["checkpoint_ns"].split(":")[0]
            namespaces[top] = namespaces.get(top, 0) + 1
        return inside, done, namespaces

    inside, done, namespaces = await same_as_in_memory(graph_with_subgraph(), scenario, api, saver)
    # The subgraph hands back its whole log, "prepare" included, and the parent's reducer adds it.
    assert done == {"log": ["prepare", "prepare", "draft", "review:ok", "publish"]}
    assert inside[:2] == ({"log": ["prepare", "draft"]}, ("review",))
    assert set(namespaces) == {"", "inner"}


# --- storage ----------------------------------------------------------------------------------
async def test_delete_thread_removes_every_namespace_and_leaves_other_threads(
    api: Api, backend: Backend, saver: RedisSaver
) -> None:
    graph = graph_with_subgraph().compile(checkpointer=saver)
    doomed, kept = (f"t-{uuid4()}" for _ in range(2))
    for thread_id in (doomed, kept):
        await api.invoke(graph, {"log": []}, {"configurable": {"thread_id": thread_id}})
    assert any(f"{{{doomed}}}:ckpt:inner:" in key for key in backend.checkpoint_keys())

    await api.delete_thread(saver, doomed)

    assert not [key for key in backend.checkpoint_keys() if f"{{{doomed}}}" in key]
    assert saver.get_tuple({"configurable": {"thread_id": doomed}}) is None
    assert saver.get_tuple({"configurable": {"thread_id": kept}}) is not None


async def test_ttl_is_set_on_every_key_written(api: Api, backend: Backend) -> None:
    saver = backend.saver(ttl=60)
    graph = graph_with_subgraph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t-ttl"}}
    await api.invoke(graph, {"log": []}, config)
    await api.invoke(graph, Command(resume="ok"), config)

    keys = backend.checkpoint_keys()
    kinds = {key.split("}:")[1].split(":")[0] for key in keys}
    assert kinds == {"keys", "ckpt", "blob", "writes"}
    assert all(0 < backend.raw.pttl(key) <= 60_000 for key in keys)


async def test_unchanged_channels_are_stored_once(backend: Backend, saver: RedisSaver) -> None:
    first = generate_checkpoint(channel_values={"a": "a1", "b": "b1"})
    first["channel_versions"] = {"a": "1", "b": "1"}
    stored = saver.put(
        generate_config("t-blobs"), first, generate_metadata(step=0), {"a": "1", "b": "1"}
    )
    second = generate_checkpoint(channel_values={"a": "a2", "b": "b1"})
    second["channel_versions"] = {"a": "2", "b": "1"}
    saver.put(stored, second, generate_metadata(step=1), {"a": "2"})

    assert backend.raw.hlen("nn:cp:{t-blobs}:blob:") == 3
    latest = saver.get_tuple(generate_config("t-blobs"))
    assert latest is not None
    assert latest.checkpoint["channel_values"] == {"a": "a2", "b": "b1"}


async def test_pending_writes_keep_the_first_value_per_task_and_index_except_special_channels(
    saver: RedisSaver,
) -> None:
    config = saver.put(generate_config("t-w"), generate_checkpoint(), generate_metadata(), {})
    saver.put_writes(config, [("x", 1), (ERROR, "boom")], "task-1")
    saver.put_writes(config, [("x", 2), (ERROR, "boom again")], "task-1")

    saved = saver.get_tuple(config)
    assert saved is not None
    assert sorted(saved.pending_writes or []) == [
        ("task-1", ERROR, "boom again"),
        ("task-1", "x", 1),
    ]


async def test_pending_writes_come_back_in_task_path_order(saver: RedisSaver) -> None:
    config = saver.put(generate_config("t-p"), generate_checkpoint(), generate_metadata(), {})
    saver.put_writes(config, [("x", "late")], "task-a", task_path="~2")
    saver.put_writes(config, [("x", "early")], "task-b", task_path="~1")

    saved = saver.get_tuple(config)
    assert saved is not None
    assert saved.pending_writes == [("task-b", "x", "early"), ("task-a", "x", "late")]


async def test_list_pages_through_long_threads_newest_first(saver: RedisSaver) -> None:
    config, ids = generate_config("t-long"), []
    for i in range(250):
        checkpoint = generate_checkpoint()
        source = "input" if i % 3 == 0 else "loop"
        config = saver.put(config, checkpoint, generate_metadata(source=source, step=i), {})
        ids.append(checkpoint["id"])
    thread = generate_config("t-long")

    listed = [t.checkpoint["id"] for t in saver.list(thread)]
    inputs = [t.metadata["step"] for t in saver.list(thread, filter={"source": "input"}, limit=60)]
    before = [t.checkpoint["id"] for t in saver.list(thread, before=config, limit=3)]

    assert listed == ids[::-1]
    assert inputs == list(range(249, -1, -3))[:60]
    assert before == ids[-2:-5:-1]


async def test_list_without_a_config_walks_every_thread_wherever_it_lives(
    api: Api, backend: Backend, saver: RedisSaver
) -> None:
    graph = chain_graph().compile(checkpointer=saver)
    thread_ids = [f"t-{i:02}" for i in range(12)]
    for thread_id in thread_ids:
        await api.invoke(graph, {"log": []}, {"configurable": {"thread_id": thread_id}})
    registries = {t: f"nn:cp:{{{t}}}:keys" for t in thread_ids}
    node_of = {t: backend.node_of(key) for t, key in registries.items()}
    # On a cluster these twelve threads do land on every primary.
    assert len(set(node_of.values())) == backend.primaries

    listed = await api.thread_ids(saver)
    assert list(dict.fromkeys(listed)) == thread_ids
    assert len(listed) == 5 * len(thread_ids)  # input + 4 loop checkpoints per thread

    # One thread deleted on each server; the others, on the same servers, stay whole.
    doomed = {node: t for t, node in node_of.items()}.values()
    for thread_id in doomed:
        await api.delete_thread(saver, thread_id)
    assert await api.thread_ids(saver) == [t for t in listed if t not in doomed]
    assert not [key for key in backend.checkpoint_keys() for t in doomed if f"{{{t}}}" in key]


async def test_put_and_put_writes_take_one_round_trip_each_and_get_tuple_two(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    round_trips = count_round_trips(backend.raw, monkeypatch)
    saver = RedisSaver(sync_client=backend.raw)
    checkpoint = generate_checkpoint(channel_values={"a": 1, "b": 2})
    checkpoint["channel_versions"] = {"a": "1", "b": "1"}

    config = saver.put(
        generate_config("t-rt"), checkpoint, generate_metadata(), {"a": "1", "b": "1"}
    )
    saver.put_writes(config, [("a", 3), ("b", 4)], "task-1")
    assert round_trips == [1, 1]
    saver.get_tuple(generate_config("t-rt"))
    assert round_trips == [1, 1, 1, 1]


def count_round_trips(
    client: redis.Redis | redis.cluster.RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """One entry per pipeline ``client`` sends from now on."""
    sent: list[int] = []
    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted(*a: Any, **kw: Any) -> Any:
            sent.append(1)
            return execute(*a, **kw)

        pipe.execute = counted  # type: ignore[method-assign]  # (this one pipeline's, counted)
        return pipe

    monkeypatch.setattr(client, "pipeline", pipeline)
    return sent


# --- failures are loud ------------------------------------------------------------------------
async def test_unreachable_server_raises_instead_of_looking_like_an_empty_thread(
    api: Api,
) -> None:
    saver = RedisSaver.from_url(f"redis://127.0.0.1:{free_port()}/0")
    graph = chain_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t-down"}}
    try:
        with pytest.raises(redis.ConnectionError):
            await api.state(graph, config)
        with pytest.raises(redis.ConnectionError):
            await api.invoke(graph, {"log": []}, config)
        with pytest.raises(redis.ConnectionError):
            await api.delete_thread(saver, "t-down")
    finally:
        await saver.aclose()


@pytest.mark.parametrize(
    "backend", ["redis", pytest.param("cluster", marks=pytest.mark.cluster)], indirect=True
)
async def test_a_burst_of_async_writes_waits_for_connections_instead_of_failing(
    backend: Backend,
) -> None:
    # More writes at once than the clients from_url opens may have connections (a cluster
    # client raises MaxConnectionsError beyond 100 per node instead of waiting); clients handed
    # in, as the fakeredis ones, are the caller's to size.
    saver = backend.saver()
    await asyncio.gather(
        *(
            saver.aput(generate_config(f"t-{i}"), generate_checkpoint(), generate_metadata(), {})
            for i in range(300)
        )
    )
    assert len([t async for t in saver.alist(None)]) == 300


# --- URLs -------------------------------------------------------------------------------------
@pytest.mark.cluster
async def test_a_cluster_url_names_any_node_and_requires_a_cluster(
    api: Api, redis_cluster: RedisClusterServers, cluster_url: str
) -> None:
    node = redis_cluster.nodes[-1]
    saver = RedisSaver.from_url(f"redis+cluster://127.0.0.1:{node.port}/0")
    graph = chain_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t-url"}}
    try:
        assert await api.invoke(graph, {"log": []}, config) == {"log": ["a", "b", "c"]}
        assert (await api.state(graph, config)).values == {"log": ["a", "b", "c"]}
    finally:
        await saver.aclose()


async def test_a_cluster_url_to_a_single_server_is_refused_with_a_nervenet_error(
    api: Api, redis_url: str
) -> None:
    saver = RedisSaver.from_url(redis_url.replace("redis://", "redis+cluster://", 1))
    graph = chain_graph().compile(checkpointer=saver)
    try:
        with pytest.raises(PoolConnectionError, match="asks for a Redis Cluster"):
            await api.invoke(graph, {"log": []}, {"configurable": {"thread_id": "t"}})
    finally:
        await saver.aclose()


async def test_an_unsupported_url_scheme_is_refused_at_once() -> None:
    with pytest.raises(ConfigurationError, match="unsupported Redis URL scheme 'http'") as error:
        RedisSaver.from_url("http://user:secret@localhost:6379/0")
    assert "secret" not in str(error.value)


async def test_clients_that_decode_responses_are_refused() -> None:
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisSaver(async_client=aioredis.Redis(decode_responses=True))


async def test_a_saver_without_a_sync_client_says_how_to_get_one() -> None:
    saver = RedisSaver(async_client=fakeredis.FakeAsyncRedis())
    with pytest.raises(RuntimeError, match="pass sync_client="):
        saver.get_tuple(generate_config("t"))
