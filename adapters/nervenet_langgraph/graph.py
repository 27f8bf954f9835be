"""``distribute(builder, pool=..., name=...)``: the one line that ports a StateGraph onto the pool.

The result *is* a compiled LangGraph graph (a ``CompiledStateGraph`` subclass): ``invoke``,
``ainvoke``, ``stream``, ``astream``, ``get_state``, ``update_state``, ``batch`` and
``get_graph`` are LangGraph's own. Each run's Pregel loop is that run's coordinator; what changes
is each node's function, which is replaced by a remote call to task type ``<name>/<node>``
(``<name>/<subgraph node>/<node>`` inside subgraphs, whose own loops also stay on the
coordinator). Workers serve the same object: ``nervenet worker app:graph``.

``name`` is the registration name workers look the graph up by; the compiled graph's own name
(LangGraph's ``compile(name=...)``, seen in tracing) is passed as ``graph_name``.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.runnables.graph import Graph
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph.state import CompiledStateGraph, StateGraph
from langgraph.pregel import Pregel

from nervenet import ConfigurationError, Pool, TaskContext
from nervenet.handlers import Handler, validate_task_type
from nervenet.routing import DEFAULT_QUEUE, TaskOptions
from nervenet.run_slots import in_a_run, iterated_in_a_slot, iterated_in_a_slot_sync

from . import runs
from ._compat import CONF, CONFIG_KEY_TASK_ID, CONFIG_KEY_THREAD_ID, PregelNode, RunnableCallable
from .checkpoint import RedisSaver
from .node_runner import run_node
from .remote_node import remote_runnable
from .runs import GraphRun
from .serde import graph_schemas, strict_serializer

_LOCAL_NODES = ("__start__",)

AnyPregel = Pregel[Any, Any, Any, Any]


@dataclass
class Distribution:
    """How one distributed graph reaches the pool, and what its workers serve."""

    pool: Pool
    """Where coordinators dispatch node tasks."""
    name: str
    """Registration name: prefix of every task type of this graph."""
    serde: JsonPlusSerializer
    """Strict serializer for node inputs, outputs and frames."""
    wait_for_worker: bool = False
    """Wait for a worker to register instead of failing fast when none serves a node."""
    durable: bool = False
    """``ainvoke`` with a thread id goes through :meth:`DistributedGraph.asubmit`."""
    local_nodes: dict[str, tuple[Runnable[Any, Any], Pregel[Any, Any, Any, Any]]] = field(
        default_factory=dict
    )
    """Task type -> (the node's original function, the (sub)graph that owns it)."""
    options: dict[str, TaskOptions] = field(default_factory=dict)
    """Task type -> its queue and limit, from the node's ``metadata={"nervenet": {...}}`` and
    ``distribute(nodes={...})`` (which wins)."""
    checkpointer: BaseCheckpointSaver[Any] | None = None
    """The root graph's saver, lent to graphs a node runs on a worker (as LangGraph lends a
    parent's saver to nested graphs). Only correct when every process sees the same saver: a
    :class:`RedisSaver`, or any saver on an embedded pool (one process)."""

    def handlers(self) -> dict[str, Handler]:
        return {task_type: self._handler(task_type) for task_type in self.local_nodes}

    def queue_of(self, task_type: str) -> str:
        options = self.options.get(task_type)
        return options.queue if options is not None else DEFAULT_QUEUE

    def _handler(self, task_type: str) -> Handler:
        bound, owner = self.local_nodes[task_type]
        serde = self.serde

        async def handle(payload: bytes, ctx: TaskContext) -> bytes:
            store = getattr(owner, "store", None)
            return await run_node(bound, payload, ctx, serde, store, self.checkpointer)

        handle.__name__ = task_type
        return handle


class DistributedRuns(Pregel[Any, Any, Any, Any]):
    """What every distributed LangGraph object adds to its LangGraph class: the pool it uses,
    the handlers its workers serve, and durable runs. A ``Pregel`` subclass (not a plain mixin)
    so its subclasses keep Pregel's object layout: ``distribute`` switches a compiled graph's
    class in place."""

    nervenet: Distribution

    def copy(self, update: dict[str, Any] | None = None) -> Any:
        # Pregel.copy rebuilds through __init__, which silently drops what it does not take
        # (our attributes, the mappers StateGraph.compile sets afterwards): carry them over.
        new = super().copy(update)
        for key, value in self.__dict__.items():
            new.__dict__.setdefault(key, value)
        return new

    def nervenet_handlers(self) -> Mapping[str, Handler]:
        """What ``nervenet worker app:graph`` serves: one handler per node (or task) type."""
        return self.nervenet.handlers()

    def nervenet_task_options(self) -> Mapping[str, TaskOptions]:
        """Each node's queue and limit (``nervenet worker app:graph --queues gpu``)."""
        return dict(self.nervenet.options)

    def nervenet_pool(self) -> Pool:
        """The pool whose durable runs ``nervenet serve app:graph`` coordinates."""
        return self.nervenet.pool

    async def asubmit(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        run_here: bool = True,
        multitask: str = "enqueue",
        **kwargs: Any,
    ) -> GraphRun:
        """Start a durable run leased to this process; a survivor resumes it if we die. A
        process at its ``PoolSettings.max_runs`` waits for a free slot before leasing the run.

        With ``run_here=False`` the run is queued instead, for the coordinator processes of the
        graph (``nervenet serve app:graph``): one of them runs it, another takes it over if that
        one dies. Needs a thread id and a checkpointer shared by all coordinator processes.
        A thread runs one run at a time, across all processes; ``multitask`` says what a run
        submitted on a busy thread does: ``enqueue`` (wait for it), ``reject`` (raise
        ``ThreadBusy``), ``interrupt`` or ``rollback`` (cancel the busy run that way, then run).
        """
        return await runs.submit(
            self, input, config, kwargs, run_here=run_here, multitask=multitask
        )

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """LangGraph's ``ainvoke``; with ``durable=True`` and a thread id, submit + wait."""
        conf = (config or {}).get(CONF, {})
        durable = (
            self.nervenet.durable
            and conf.get(CONFIG_KEY_THREAD_ID)
            and runs.RUN_ID_KEY not in conf
            and set(kwargs) <= {"context", "durability"}
        )
        if durable:
            run = await self.asubmit(input, config, **kwargs)
            return await run.result()
        # Not through direct_ainvoke: one coroutine frame less per run in flight (~0.5 KiB).
        return await super().ainvoke(input, config, **kwargs)

    def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """LangGraph's ``astream``; the chunks of a durable run's root graph (its ``ainvoke``
        streams through here) are also stored for :meth:`join`. Other streams pass as they
        are, without a wrapper."""
        stream = super().astream(input, config, **kwargs)
        run_id = runs.joinable_run(config)
        if run_id is not None:
            return runs.published(self, run_id, stream)
        if self._takes_a_slot(config):
            return iterated_in_a_slot(self.nervenet.pool.run_slots, stream)
        return stream

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """LangGraph's ``stream`` (and so ``invoke``), in a run slot of the pool's process when
        it bounds them (``PoolSettings.max_runs``)."""
        stream = super().stream(input, config, **kwargs)
        if self._takes_a_slot(config):
            return iterated_in_a_slot_sync(self.nervenet.pool.run_slots, stream)
        return stream

    def _takes_a_slot(self, config: RunnableConfig | None) -> bool:
        """Whether a run with ``config`` waits for a slot of a bounded pool: a root run does.
        Runs inside another one share its slot: a subgraph, a graph called from a node (both
        have a task id in their config: LangGraph's own test for "run as a task"), a durable
        run's graph and whatever a durable run starts."""
        if not self.nervenet.pool.run_slots.bounded or in_a_run():
            return False
        conf = ensure_config(config).get(CONF, {})  # also what the calling node's context gives
        return CONFIG_KEY_TASK_ID not in conf and runs.RUN_ID_KEY not in conf

    def join(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[Any]:
        """``(event id, chunk)`` of a durable run from any process, until it ends; resume
        after a disconnect with the last event id seen. See :func:`runs.join`."""
        return runs.join(self, run_id, last_event_id)

    async def direct_ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """LangGraph's own ``ainvoke`` in this process, without a durable lease."""
        return await super().ainvoke(input, config, **kwargs)


class DistributedGraph(DistributedRuns, CompiledStateGraph):  # type: ignore[type-arg]
    """A compiled StateGraph whose nodes run on a nervenet pool. Made by :func:`distribute`."""

    original: CompiledStateGraph  # type: ignore[type-arg]
    """The graph as compiled, before its nodes were replaced: what ``get_graph`` draws."""

    def get_graph(self, config: RunnableConfig | None = None, *, xray: int | bool = False) -> Graph:
        return self.original.get_graph(config, xray=xray)

    async def aget_graph(
        self, config: RunnableConfig | None = None, *, xray: int | bool = False
    ) -> Graph:
        return await self.original.aget_graph(config, xray=xray)


def distribute(
    graph: StateGraph[Any] | CompiledStateGraph[Any, Any, Any, Any] | Pregel[Any, Any, Any, Any],
    *,
    pool: Pool,
    name: str,
    allowed_types: Iterable[type] = (),
    wait_for_worker: bool = False,
    durable: bool | None = None,
    graph_name: str | None = None,
    nodes: Mapping[str, Mapping[str, Any]] | None = None,
    tasks: Iterable[Any] = (),
    **compile_kwargs: Any,
) -> DistributedGraph:
    """Compile ``graph`` (if it is a builder) so that every node runs on ``pool``.

    ``compile_kwargs`` (``checkpointer``, ``store``, ``interrupt_before``...) go to
    ``StateGraph.compile``. ``allowed_types`` lists extra classes node inputs, outputs or stream
    chunks may contain beyond the graph's schemas (everything else is refused on decode).
    ``durable`` (default: on when the checkpointer is a :class:`RedisSaver`, which every
    coordinator process can read) makes ``ainvoke`` with a thread id a leased run that another
    coordinator process resumes if this one dies.

    Per-node options (``queue``, ``max_concurrency``, ``rate_limit``, ``limit_key``, ``burst``)
    come from ``builder.add_node(name, fn, metadata={"nervenet": {...}})`` and from
    ``nodes={"name": {...}}`` here, which wins key by key.

    ``graph`` may also be an ``@entrypoint`` workflow (LangGraph's functional API): its body runs
    here, each ``@task`` call on the pool (see :mod:`nervenet_langgraph.functional`); ``nodes``
    then holds per-task options by task name, and ``tasks`` lists tasks the entrypoint reaches
    other than by name in its code (through an object, a registry).
    """
    from .functional import distribute_entrypoint, is_entrypoint  # it builds on this module

    validate_task_type(name)
    if "name" in compile_kwargs:
        raise ConfigurationError(
            "`name` is the registration name workers find the graph by; pass LangGraph's own "
            "compiled-graph name as graph_name=..."
        )
    if tasks and not is_entrypoint(graph):
        raise ConfigurationError(
            "distribute(tasks=...) lists the tasks of an @entrypoint workflow; a graph's nodes "
            "that call tasks are found from their code"
        )
    if isinstance(graph, StateGraph):
        if graph_name is not None:
            compile_kwargs["name"] = graph_name
        compiled = graph.compile(**compile_kwargs)
    elif isinstance(graph, CompiledStateGraph):
        if compile_kwargs or graph_name:
            raise ConfigurationError("compile options apply to a StateGraph builder only")
        compiled = graph
    elif is_entrypoint(graph):
        if compile_kwargs or graph_name:
            raise ConfigurationError("compile options apply to a StateGraph builder only")
        return distribute_entrypoint(  # type: ignore[return-value]
            graph,
            pool=pool,
            name=name,
            tasks=tasks,
            allowed_types=allowed_types,
            wait_for_worker=wait_for_worker,
            durable=durable,
            options=nodes,
        )
    else:
        raise ConfigurationError(
            f"distribute() takes a langgraph StateGraph, its compiled graph or an @entrypoint "
            f"workflow, not "
            f"{type(graph).__name__}"
        )
    serde = strict_serializer(_all_schemas(compiled), allowed_types)
    if durable is None:
        durable = isinstance(compiled.checkpointer, RedisSaver)
    distribution = Distribution(pool, name, serde, wait_for_worker, durable)
    if isinstance(compiled.checkpointer, BaseCheckpointSaver):
        distribution.checkpointer = compiled.checkpointer
    overrides = dict(nodes or {})
    unknown = set(overrides) - set(compiled.nodes)
    if unknown:
        raise ConfigurationError(
            f"distribute(nodes=...) names no node of the graph: {sorted(unknown)}; its nodes "
            f"are {sorted(n for n in compiled.nodes if n not in _LOCAL_NODES)}"
        )
    distributed = _distributed_copy(compiled, distribution, prefix=name, overrides=overrides)
    pool.workflows.register(
        name,
        lambda run_id, payload: runs.resume(distributed, run_id, payload),
        rollback=lambda run_id, payload: runs.rollback(distributed, run_id, payload),
    )
    return distributed


def _distributed_copy(
    compiled: CompiledStateGraph[Any, Any, Any, Any],
    distribution: Distribution,
    prefix: str,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> DistributedGraph:
    from .functional import TaskDispatch, find_tasks  # it builds on this module

    nodes: dict[str, PregelNode] = {}
    tasks: TaskDispatch | None = None
    for node_name, node in compiled.nodes.items():
        if node_name in _LOCAL_NODES:
            nodes[node_name] = node
            continue
        called = find_tasks(func) if (func := _node_function(node.bound)) else {}
        if called:
            # A node that calls @task functions orchestrates them, like an entrypoint body: it
            # runs here, in the run's loop, so each call is a push task of the run
            # (checkpointed, retried by the task's own policy, streamed) that runs on the pool.
            if tasks is None:
                tasks = TaskDispatch(distribution, f"{prefix}/@task", f"graph {prefix!r}", compiled)
            tasks.add(called.values())
            nodes[node_name] = node.copy({"bound": tasks.hook.wrap(node.bound)})
            continue
        task_type = validate_task_type(f"{prefix}/{_task_type_segment(node_name)}")
        if isinstance(node.bound, DistributedRuns):
            # Already distributed by the user: keep that very object, as plain LangGraph keeps
            # the compiled subgraph it was given (get_subgraphs yields it, resume addresses it);
            # this graph's workers serve its nodes too.
            distribution.local_nodes.update(node.bound.nervenet.local_nodes)
            distribution.options.update(node.bound.nervenet.options)
            nodes[node_name] = node
            continue
        if isinstance(node.bound, CompiledStateGraph):
            # A subgraph's own loop stays on the coordinator; its nodes go to the pool.
            subgraph = _distributed_copy(node.bound, distribution, task_type)
            # LangGraph leaves a checkpointer=False subgraph out of node.subgraphs: so do we.
            subgraphs = [subgraph] if node.subgraphs else []
            nodes[node_name] = node.copy({"bound": subgraph, "subgraphs": subgraphs})
            continue
        if isinstance(node.bound, Pregel):
            raise ConfigurationError(
                f"node {node_name!r} is a plain Pregel graph; distribute its StateGraph instead"
            )
        options = _node_options(compiled, node_name, (overrides or {}).get(node_name))
        if options:
            distribution.options[task_type] = TaskOptions.parse(task_type, options)
        trace = bool(getattr(node.bound, "trace", False))
        # The node's own run is opened by the stand-in below, on the coordinator; the worker
        # runs the function under it (callbacks.py) and must not open it a second time.
        distribution.local_nodes[task_type] = (_untraced(node.bound), compiled)
        remote = remote_runnable(distribution, task_type, node_name, trace)
        nodes[node_name] = node.copy({"bound": remote})
    # A shallow copy keeps every attribute, also those StateGraph.compile sets after
    # construction (the v2 output/state mappers) and any LangGraph adds later.
    distributed = copy.copy(compiled)
    distributed.__class__ = DistributedGraph
    distributed.__dict__.pop("__orig_class__", None)
    distributed.nodes = nodes
    distributed.nervenet = distribution  # type: ignore[attr-defined]
    distributed.original = _drawn(getattr(compiled, "original", compiled))  # type: ignore[attr-defined]
    return distributed  # type: ignore[return-value]


def _drawn(
    compiled: CompiledStateGraph[Any, Any, Any, Any],
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """What ``get_graph`` draws: the graph with any subgraph the user had distributed shown as
    the plain graph it distributes, as if it had been added plain."""
    plain = {
        name: node.copy(
            {
                "bound": node.bound.original,
                "subgraphs": [node.bound.original] if node.subgraphs else [],
            }
        )
        for name, node in compiled.nodes.items()
        if isinstance(node.bound, DistributedGraph)
    }
    if not plain:
        return compiled
    drawn = copy.copy(compiled)
    drawn.nodes = {**compiled.nodes, **plain}
    return drawn


def _node_function(bound: Any) -> Any:
    """The user function of a plain node (a sync node's ``afunc`` is LangGraph's executor hop)."""
    if not isinstance(bound, RunnableCallable):
        return None
    return bound.func if bound.func is not None else bound.afunc


def _node_options(
    compiled: CompiledStateGraph[Any, Any, Any, Any],
    node_name: str,
    override: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A node's nervenet options: its metadata's, then ``distribute(nodes=...)``'s."""
    spec = compiled.builder.nodes.get(node_name)
    metadata = (getattr(spec, "metadata", None) or {}).get("nervenet") or {}
    if not isinstance(metadata, Mapping):
        raise ConfigurationError(
            f"node {node_name!r}: metadata['nervenet'] must be a dict of options, e.g. "
            "{'queue': 'gpu', 'max_concurrency': 4}"
        )
    return {**metadata, **(override or {})}


def _task_type_segment(node_name: str) -> str:
    """A node name as it appears in a task type: LangGraph allows spaces, stream keys don't."""
    return quote(node_name, safe="/:@!$&'()*+,;=-._~")


def _all_schemas(compiled: CompiledStateGraph[Any, Any, Any, Any]) -> list[Any]:
    schemas = graph_schemas(compiled.builder)
    for node in compiled.nodes.values():
        if isinstance(node.bound, CompiledStateGraph):
            schemas.extend(_all_schemas(node.bound))
    return schemas


def _untraced(bound: Runnable[Any, Any]) -> Runnable[Any, Any]:
    if not (isinstance(bound, RunnableCallable) and bound.trace):
        return bound
    untraced = copy.copy(bound)
    untraced.trace = False
    return untraced
