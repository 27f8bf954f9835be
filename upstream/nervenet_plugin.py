"""pytest plugin: every ``StateGraph.compile`` in LangGraph's own tests returns a distributed graph,
and every ``@entrypoint`` a distributed workflow (its ``@task`` calls served by the same worker).

Load it with ``-p nervenet_plugin`` (``upstream/run.py`` puts this folder on ``PYTHONPATH``).

What a test gets from ``builder.compile(...)``: LangGraph compiles the builder as usual (so
``compile``'s own errors and options are untouched), then the compiled graph goes through
``nervenet_langgraph.distribute`` on an embedded pool (``Pool.local()``, fakeredis) and an
in-process worker serves it at once. Every node function then runs as a nervenet task; the Pregel
loop stays in the test.

Pool lifetime: one pool per test, made on the first compile of that test and closed when the test
tears down (workers stopped, reply stream deleted, the pool's private loop thread joined), so no
task, worker or thread outlives its test. The pool's home loop is always its own private thread:
sync tests (``graph.invoke`` runs nodes in threads) and async tests (``await graph.ainvoke``, on
the test's loop) both hop onto it, and nothing depends on which loop the test used first.
Graphs compiled outside any test (module import) share one session pool, closed at exit.

A subgraph compiled by a test and then added to a parent as a node is a distributed graph itself.
When the parent is compiled, the plugin puts the subgraph's *plain* compiled graph back in its
place before distributing the parent, as a user would write it (compile the subgraph, distribute
the whole): the parent's distribution then covers the subgraph's nodes, and the subgraph's loop
runs on the coordinator. ``get_subgraphs`` then yields, in place of such a plain graph, the
distributed graph the test's compile returned for it (the test holds that one and may compare
identities). Set ``NERVENET_UPSTREAM_NESTED=keep`` to hand ``distribute`` the nested distributed
graph as is instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import itertools
import os
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langgraph.func import entrypoint
from langgraph.graph.state import CompiledStateGraph, StateGraph
from langgraph.pregel import Pregel
from nervenet_langgraph import DistributedGraph, distribute

from nervenet import Pool, PoolSettings

_original_compile = StateGraph.compile
_original_entrypoint = entrypoint.__call__
_original_get_subgraphs = Pregel.get_subgraphs
_original_aget_subgraphs = Pregel.aget_subgraphs
# Captured before any test can mock ``uuid.uuid4`` (the ``deterministic_uuids`` fixture does).
_real_uuid4 = uuid.uuid4
_names = itertools.count()
_NESTED = os.environ.get("NERVENET_UPSTREAM_NESTED", "unwrap")
_SETTINGS = PoolSettings()
# Plain LangGraph runs every task of a step at once (upstream asserts 100 concurrent Sends);
# a worker's own cap is a deployment choice, so the in-process workers here do not impose one.
_WORKER_CONCURRENCY = 1024
# Closing stops each in-process worker with a 5 s grace for tasks still running.
_CLOSE_TIMEOUT = 60.0


class _TestPool:
    """The pool of one test (or of the session, for graphs compiled outside tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pool: Pool | None = None
        self.graphs = 0

    def get(self) -> Pool:
        with self._lock:
            if self.pool is None:
                self.pool = Pool.local(settings=_SETTINGS)
                # Start it from here, so its home is a private loop thread whatever loop the
                # test runs on (Portal makes one for a pool first used from sync code).
                self.pool.call_sync(self.pool.ensure_started)
            return self.pool

    def close(self) -> str | None:
        """Close the pool (workers, reply stream, loop thread); a description if it hung."""
        with self._lock:
            pool, self.pool = self.pool, None
        if pool is None:
            return None
        loop = pool.portal.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            pool.portal.close()
            return None
        closing = asyncio.run_coroutine_threadsafe(pool.aclose(), loop)
        try:
            closing.result(timeout=_CLOSE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            problem = f"pool.aclose() did not finish in {_CLOSE_TIMEOUT:g} s; " + _task_stacks(loop)
            closing.cancel()
            pool.portal.close()  # stop the loop thread anyway: nothing may outlive the test
            return problem
        pool.portal.close()
        return None


def _task_stacks(loop: asyncio.AbstractEventLoop) -> str:
    """Where every task still on ``loop`` waits (diagnosis of a hung close)."""
    out = io.StringIO()
    for task in list(asyncio.all_tasks(loop)):
        task.print_stack(limit=8, file=out)
    return f"tasks still pending:\n{out.getvalue()}"


_session = _TestPool()
_current: _TestPool | None = None
# Distributed graph -> the plain compiled graph it was made from (for nested subgraphs).
_plain_of: weakref.WeakKeyDictionary[DistributedGraph, CompiledStateGraph[Any, Any, Any, Any]] = (
    weakref.WeakKeyDictionary()
)
# id(plain compiled graph) -> the distributed graph the test was handed for it. The plain graph
# lives as long as its distributed graph (which holds it), so an id is never reused meanwhile.
_distributed_of: weakref.WeakValueDictionary[int, DistributedGraph] = weakref.WeakValueDictionary()
stats = {"compiled": 0, "distributed": 0, "entrypoints": 0}
close_errors: list[str] = []


def _unwrap_nested(compiled: CompiledStateGraph[Any, Any, Any, Any]) -> None:
    for node_name, node in list(compiled.nodes.items()):
        bound = node.bound
        if isinstance(bound, DistributedGraph) and bound in _plain_of:
            plain = _plain_of[bound]
            subgraphs = [plain if s is bound else s for s in (node.subgraphs or [])]
            compiled.nodes[node_name] = node.copy({"bound": plain, "subgraphs": subgraphs})


def _get_subgraphs(
    self: Pregel[Any, Any, Any, Any], *, namespace: str | None = None, recurse: bool = False
) -> Iterator[tuple[str, Any]]:
    """Subgraphs as the test compiled them: a nested subgraph was unwrapped to its plain graph
    (what a user writes), but the test holds, and compares with, what its compile returned."""
    for ns, graph in _original_get_subgraphs(self, namespace=namespace, recurse=recurse):
        yield ns, _as_compiled_by_test(graph)


async def _aget_subgraphs(
    self: Pregel[Any, Any, Any, Any], *, namespace: str | None = None, recurse: bool = False
) -> AsyncIterator[tuple[str, Any]]:
    async for ns, graph in _original_aget_subgraphs(self, namespace=namespace, recurse=recurse):
        yield ns, _as_compiled_by_test(graph)


def _as_compiled_by_test(graph: Any) -> Any:
    # distribute() copies a subgraph to send its nodes to the pool; `.original` is the plain one.
    return _distributed_of.get(id(getattr(graph, "original", graph)), graph)


def _serve(pool: Pool, graph: Any) -> None:
    if not graph.nervenet_handlers():
        return  # nothing but __start__: no task types to serve
    home = pool.portal.loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and running is home:
        # Compiled by a node running on the pool's own loop: cannot block it; start the worker
        # as a task and let dispatches wait for it to register.
        graph.nervenet.wait_for_worker = True
        running.create_task(pool.serve(graph, concurrency=_WORKER_CONCURRENCY))
        return
    pool.call_sync(lambda: pool.serve(graph, concurrency=_WORKER_CONCURRENCY))


def _distributed_compile(self: StateGraph[Any], *args: Any, **kwargs: Any) -> Any:
    compiled = _original_compile(self, *args, **kwargs)
    stats["compiled"] += 1
    if _NESTED == "unwrap":
        _unwrap_nested(compiled)
    holder = _current or _session
    # Registration names are unique per pool; LangGraph's own `name=` stays the compiled graph's.
    with _uuid_unmocked():
        pool = holder.get()
        graph = distribute(compiled, pool=pool, name=f"g{next(_names)}")
        _serve(pool, graph)
    _plain_of[graph] = compiled
    _distributed_of[id(compiled)] = graph
    holder.graphs += 1
    stats["distributed"] += 1
    return graph


def _distributed_entrypoint(self: entrypoint[Any], func: Any) -> Any:
    """``@entrypoint(...)``: LangGraph builds the workflow, then it is distributed and served
    (its body runs in the test, each ``@task`` call on the in-process worker)."""
    workflow = _original_entrypoint(self, func)
    holder = _current or _session
    with _uuid_unmocked():
        pool = holder.get()
        graph = distribute(workflow, pool=pool, name=f"e{next(_names)}")
        _serve(pool, graph)
    holder.graphs += 1
    stats["entrypoints"] += 1
    return graph


class _uuid_unmocked:
    """Pools and workers draw ids from ``uuid.uuid4``; keep them off a test's mocked sequence."""

    def __enter__(self) -> None:
        self._saved = uuid.uuid4
        uuid.uuid4 = _real_uuid4

    def __exit__(self, *exc: object) -> None:
        uuid.uuid4 = self._saved


def pytest_configure(config: pytest.Config) -> None:
    StateGraph.compile = _distributed_compile  # type: ignore[method-assign, assignment]
    entrypoint.__call__ = _distributed_entrypoint  # type: ignore[method-assign]
    if _NESTED == "unwrap":
        Pregel.get_subgraphs = _get_subgraphs  # type: ignore[method-assign]
        Pregel.aget_subgraphs = _aget_subgraphs  # type: ignore[method-assign]
    config.addinivalue_line("markers", "nervenet_distributed: run under the nervenet plugin")


def pytest_unconfigure(config: pytest.Config) -> None:
    StateGraph.compile = _original_compile  # type: ignore[method-assign]
    entrypoint.__call__ = _original_entrypoint  # type: ignore[method-assign]
    Pregel.get_subgraphs = _original_get_subgraphs  # type: ignore[method-assign]
    Pregel.aget_subgraphs = _original_aget_subgraphs  # type: ignore[method-assign]
    if problem := _session.close():
        print(f"nervenet: session pool: {problem}")


def pytest_report_header(config: pytest.Config) -> str:
    return (
        "nervenet: every StateGraph.compile and @entrypoint is distributed on a per-test "
        "Pool.local()"
    )


@pytest.fixture(autouse=True)
def _nervenet_pool(request: pytest.FixtureRequest) -> Iterator[None]:
    """One pool per test (autouse, so set up before the test's own fixtures and torn down after
    them). A close that hangs fails the test's teardown with the stacks of the stuck tasks."""
    global _current
    holder = _current = _TestPool()
    try:
        yield
    finally:
        _current = None
        problem = holder.close()
        leaked = [t for t in threading.enumerate() if t.name == "nervenet-portal"]
        if len(leaked) > (1 if _session.pool is not None else 0):
            problem = (problem or "") + f" {len(leaked)} pool loop thread(s) still running"
        if problem:
            close_errors.append(f"{request.node.nodeid}: {problem.splitlines()[0]}")
            pytest.fail(f"nervenet teardown: {problem}", pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"nervenet: {stats['distributed']} graphs distributed "
        f"({stats['compiled']} StateGraph.compile calls), "
        f"{stats['entrypoints']} @entrypoint workflows distributed"
    )
    for line in close_errors:
        terminalreporter.write_line(f"nervenet teardown problem: {line}")
