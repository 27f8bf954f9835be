"""LangGraph's functional API on the pool: ``distribute(workflow, pool=pool, name=...)``.

``@entrypoint(...)`` makes a one-node Pregel graph whose node is the entrypoint body; each
``@task`` call inside it goes through the running task's ``CONFIG_KEY_CALL``, which schedules a
push task of that loop (checkpointed result, the task's ``RetryPolicy``/``CachePolicy``).

Distributed, the body and the loop stay on the run's coordinator, exactly as a graph's Pregel loop
does; only the task *functions* leave. The body's call hook is wrapped so LangGraph schedules a
stand-in with the task's name, module and qualname (so task ids, checkpoint namespaces and cache
keys are the ones plain LangGraph computes) whose body is a dispatch to the pool, through the same
:class:`~nervenet_langgraph.remote_node.RemoteNode` a graph node uses: interrupts, resume
bookkeeping, stream frames and exception types come back the same way.

Workers never import what a payload names: they serve the tasks found by following the entrypoint
function's code (globals it reads, closure cells, helper functions it calls) plus any listed in
``distribute(..., tasks=[...])``. A task call the coordinator cannot map to one of them fails the
run at once, naming the task, rather than running somewhere unexpected.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.config import get_config
from langgraph.pregel import Pregel

from nervenet import ConfigurationError, Pool
from nervenet.handlers import validate_task_type
from nervenet.routing import TaskOptions

from . import _compat as lg
from . import runs
from .checkpoint import RedisSaver
from .graph import DistributedRuns, Distribution
from .remote_node import RemoteNode
from .serde import strict_serializer

# How deep the search for tasks follows helper functions the entrypoint calls.
_MAX_SCAN_DEPTH = 6


class DistributedEntrypoint(DistributedRuns):
    """An ``@entrypoint`` workflow whose ``@task`` calls run on a nervenet pool."""

    original: Pregel  # type: ignore[type-arg]
    """The workflow as ``@entrypoint`` made it."""
    tasks: Mapping[str, Callable[..., Any]]
    """Task type -> the task's function, as its workers serve it."""


def is_entrypoint(graph: Any) -> bool:
    """Whether ``graph`` is what ``@entrypoint(...)`` returns (a one-node Pregel with the
    ``__previous__`` channel), not a hand-built Pregel."""
    return (
        isinstance(graph, Pregel)
        and len(graph.nodes) == 1
        and lg.PREVIOUS in graph.channels
        and isinstance(next(iter(graph.nodes.values())).bound, lg.RunnableCallable)
    )


def distribute_entrypoint(
    workflow: Pregel,  # type: ignore[type-arg]
    *,
    pool: Pool,
    name: str,
    tasks: Iterable[Any] = (),
    allowed_types: Iterable[type] = (),
    wait_for_worker: bool = False,
    durable: bool | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> DistributedEntrypoint:
    """See :func:`nervenet_langgraph.distribute`."""
    ((node_name, node),) = workflow.nodes.items()
    body = node.bound
    func = entrypoint_function(body)
    found = find_tasks(func, extra=tasks)
    serde = strict_serializer(_schemas(workflow, found.values()), allowed_types)
    if durable is None:
        durable = isinstance(workflow.checkpointer, RedisSaver)
    distribution = Distribution(pool, name, serde, wait_for_worker, durable)
    if isinstance(workflow.checkpointer, lg.BaseCheckpointSaver):
        distribution.checkpointer = workflow.checkpointer
    dispatch = TaskDispatch(distribution, name, f"entrypoint {node_name!r}", workflow)
    dispatch.add(found.values(), options)
    calls = dispatch.hook

    # A shallow copy keeps every attribute (as for graphs); only the class and the node change.
    distributed = copy.copy(workflow)
    distributed.__class__ = DistributedEntrypoint
    assert isinstance(distributed, DistributedEntrypoint)
    distributed.__dict__.pop("__orig_class__", None)
    distributed.nodes = {node_name: node.copy({"bound": calls.wrap(body)})}
    distributed.nervenet = distribution
    distributed.original = workflow
    distributed.tasks = dict(dispatch.served)
    pool.workflows.register(name, lambda run_id, payload: runs.resume(distributed, run_id, payload))
    return distributed


def entrypoint_function(body: Any) -> Callable[..., Any]:
    """The user's function behind an entrypoint's node (sync ones have an executor ``afunc``)."""
    func = body.func if body.func is not None else body.afunc
    return func  # type: ignore[no-any-return]


class TaskDispatch:
    """The ``@task`` functions one distributed object sends to the pool, and their stand-ins."""

    def __init__(
        self,
        distribution: Distribution,
        prefix: str,
        caller: str,
        owner: Pregel,  # type: ignore[type-arg]
    ) -> None:
        self.distribution = distribution
        self.prefix = prefix
        self.caller = caller
        self.owner = owner
        self.stand_ins: dict[Callable[..., Any], Callable[..., Any]] = {}
        self.hook = _CallHook(self.stand_ins, caller)
        self.served: dict[str, Callable[..., Any]] = {}
        self._by_name: dict[str, Callable[..., Any]] = {}

    def add(
        self,
        funcs: Iterable[Callable[..., Any]],
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Serve these task functions (``options``: per task name, as for nodes)."""
        added: dict[str, Callable[..., Any]] = {}
        for task_func in funcs:
            if task_func in self.stand_ins:
                continue
            other = self._by_name.setdefault(_task_name(task_func), task_func)
            if other is not task_func:
                raise ConfigurationError(
                    f"two tasks of {self.caller} are named {_task_name(task_func)!r}: "
                    f"{_describe(other)} and {_describe(task_func)}; workers find tasks by "
                    "name, so give one @task(name=...)"
                )
            added[_task_name(task_func)] = task_func
        unknown = set(options or {}) - set(self._by_name)
        if unknown:
            raise ConfigurationError(
                f"distribute(nodes=...) names no task of {self.caller}: {sorted(unknown)}; "
                f"its tasks are {sorted(self._by_name)}"
            )
        for task_name, task_func in sorted(added.items()):
            if _calls_tasks(task_func):
                # A task that calls tasks orchestrates, like the entrypoint body: it runs where
                # the loop is, so its own calls are push tasks of the run (checkpointed,
                # streamed, retried) exactly as in plain LangGraph; the tasks it calls go to
                # the pool.
                self.stand_ins[task_func] = self.hook.local(task_func)
                continue
            task_type = validate_task_type(f"{self.prefix}/{quote(task_name, safe='')}")
            if task_type in self.distribution.local_nodes:
                raise ConfigurationError(
                    f"task {task_name!r} of {self.caller} has the task type {task_type!r} of "
                    "a node; rename the task (@task(name=...)) or the node"
                )
            # The worker runs what LangGraph's own task runnable runs, minus the RETURN write,
            # which the stand-in's runnable makes here.
            self.distribution.local_nodes[task_type] = (lg.task_callable(task_func), self.owner)
            if options and task_name in options:
                self.distribution.options[task_type] = TaskOptions.parse(
                    task_type, options[task_name]
                )
            remote = RemoteNode(self.distribution, task_type, task_name)
            self.stand_ins[task_func] = _stand_in(remote, task_func)
            self.served[task_type] = task_func


class _CallHook:
    """Wraps the entrypoint body (or an orchestrating node or task) so its task calls schedule
    stand-ins instead of the tasks. ``entry`` names the caller in errors."""

    def __init__(self, stand_ins: Mapping[Callable[..., Any], Callable[..., Any]], entry: str):
        self.stand_ins = stand_ins
        self.entry = entry

    def wrap(self, body: Runnable[Any, Any]) -> Runnable[Any, Any]:
        def invoke(input: Any, config: RunnableConfig) -> Any:
            child = self._child(config)
            token = var_child_runnable_config.set(child)
            try:
                return body.invoke(input, child)
            finally:
                var_child_runnable_config.reset(token)

        async def ainvoke(input: Any, config: RunnableConfig) -> Any:
            child = self._child(config)
            token = var_child_runnable_config.set(child)
            try:
                return await body.ainvoke(input, child)
            finally:
                var_child_runnable_config.reset(token)

        return lg.RunnableCallable(invoke, ainvoke, name=body.name, trace=False, recurse=False)

    def local(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """A stand-in for a task that runs ``func`` here, its own task calls hooked too."""
        if lg.is_async_callable(func):

            async def run_local(*args: Any, **kwargs: Any) -> Any:
                token = var_child_runnable_config.set(self._child(get_config()))
                try:
                    return await func(*args, **kwargs)
                finally:
                    var_child_runnable_config.reset(token)

            wrapper: Callable[..., Any] = run_local
        else:

            def sync_run_local(*args: Any, **kwargs: Any) -> Any:
                token = var_child_runnable_config.set(self._child(get_config()))
                try:
                    return func(*args, **kwargs)
                finally:
                    var_child_runnable_config.reset(token)

            wrapper = sync_run_local
        _impersonate(wrapper, func)
        # LangGraph injects config/runtime/writer... by the signature: the real one, here.
        with contextlib.suppress(TypeError, ValueError):
            wrapper.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
        return wrapper

    def _child(self, config: RunnableConfig) -> RunnableConfig:
        conf = config.get(lg.CONF, {})
        schedule = conf.get(lg.CONFIG_KEY_CALL)
        if schedule is None:
            return config
        stand_ins, entry = self.stand_ins, self.entry

        def call(func: Callable[..., Any], input: Any, **options: Any) -> Any:
            stand_in = stand_ins.get(func)
            if stand_in is None:
                raise ConfigurationError(
                    f"{entry} called task {_describe(func)}, which distribute() "
                    "did not find in the caller's code, so no worker serves it; pass it as "
                    "distribute(..., tasks=[...])"
                )
            return schedule(stand_in, input, **options)

        return {**config, lg.CONF: {**conf, lg.CONFIG_KEY_CALL: call}}


def _stand_in(remote: RemoteNode, func: Callable[..., Any]) -> Callable[..., Any]:
    """What LangGraph schedules in place of ``func``: same name, module, qualname and user
    parameters (task ids, namespaces, cache keys and traces match plain LangGraph), and a body
    that runs ``func`` on the pool in the task's own context."""
    if lg.is_async_callable(func):

        async def stand_in(*args: Any, **kwargs: Any) -> Any:
            return await remote.ainvoke((args, kwargs), get_config())

        wrapper: Callable[..., Any] = stand_in
    else:

        def sync_stand_in(*args: Any, **kwargs: Any) -> Any:
            return remote.invoke((args, kwargs), get_config())

        wrapper = sync_stand_in
    _impersonate(wrapper, func)
    # LangGraph injects config/writer/store/runtime... by parameter name: the worker injects them
    # into the real function; here they must not be, nor cross the wire. A caller may still
    # pass one explicitly (LangGraph then injects nothing): a ``**kwargs`` takes it.
    with contextlib.suppress(TypeError, ValueError):
        signature = inspect.signature(func)
        injected = lg.injectable_kwargs()
        params = [p for p in signature.parameters.values() if p.name not in injected]
        if len(params) < len(signature.parameters) and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params
        ):
            params.append(inspect.Parameter("injected", inspect.Parameter.VAR_KEYWORD))
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


def _impersonate(wrapper: Callable[..., Any], func: Callable[..., Any]) -> None:
    """Give a stand-in the names LangGraph derives a task's name (ids, namespaces, ``updates``
    keys) and its cache key (``module.qualname``, or "dynamic" without a module) from."""
    wrapper.__name__ = _task_name(func)
    wrapper.__doc__ = getattr(func, "__doc__", None)
    ident = lg.identifier(func)
    if ident is None:
        wrapper.__module__ = None  # type: ignore[assignment]
    else:
        module = str(getattr(func, "__module__", ""))
        wrapper.__module__ = module
        wrapper.__qualname__ = ident.removeprefix(f"{module}.")


def find_tasks(
    func: Callable[..., Any], extra: Iterable[Any] = ()
) -> dict[int, Callable[..., Any]]:
    """The functions of every ``@task`` the entrypoint's code reaches, by ``id``.

    Follows the names the function's code (and nested code) reads from its globals, its
    closure cells and its defaults, into the helper functions and the lists, tuples, sets and
    dicts found there. Tasks reached any other way (through an object's attributes) are listed
    explicitly.
    """
    found: dict[int, Callable[..., Any]] = {}
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > _MAX_SCAN_DEPTH:
            return
        seen.add(id(obj))
        if isinstance(obj, lg._TaskFunction):
            found[id(obj.func)] = obj.func
            visit(obj.func, depth + 1)  # tasks it calls, for graph nodes that call tasks
            return
        if isinstance(obj, functools.partial):
            visit(obj.func, depth)
            return
        if isinstance(obj, (list, tuple, set, frozenset, dict)):  # a registry of tools
            for item in obj.values() if isinstance(obj, dict) else obj:
                visit(item, depth + 1)
            return
        if not isinstance(obj, types.FunctionType):
            return
        for value in _referenced(obj):
            visit(value, depth + 1)

    visit(func, 0)
    for item in extra:
        if isinstance(item, lg._TaskFunction):
            found[id(item.func)] = item.func
        elif callable(item):
            found[id(item)] = item
        else:
            raise ConfigurationError(f"distribute(tasks=...): {item!r} is not a @task")
    return found


def _calls_tasks(func: Callable[..., Any]) -> bool:
    target = func.func if isinstance(func, functools.partial) else func
    return isinstance(target, types.FunctionType) and bool(find_tasks(target))


def _referenced(func: types.FunctionType) -> list[Any]:
    values: list[Any] = []
    for cell in func.__closure__ or ():
        with contextlib.suppress(ValueError):  # an empty cell: not assigned yet
            values.append(cell.cell_contents)
    values.extend(func.__defaults__ or ())
    values.extend((func.__kwdefaults__ or {}).values())
    globals_ = func.__globals__
    for name in _global_names(func.__code__):
        if name in globals_:
            values.append(globals_[name])
    return values


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return names


def _task_name(func: Callable[..., Any]) -> str:
    """The name LangGraph gives the task (as ``get_runnable_for_task`` does)."""
    name = getattr(func, "__name__", None) or getattr(getattr(func, "func", None), "__name__", None)
    return str(name or type(func).__name__)


def _describe(func: Callable[..., Any]) -> str:
    return (
        f"{getattr(func, '__name__', func)!r} ({getattr(func, '__module__', '?')}."
        f"{getattr(func, '__qualname__', '?')})"
    )


def _schemas(workflow: Pregel, funcs: Iterable[Callable[..., Any]]) -> list[Any]:  # type: ignore[type-arg]
    """The entrypoint's input/output/save/context types and every task's annotations."""
    schemas: list[Any] = []
    for channel in workflow.channels.values():
        typ = getattr(channel, "typ", None)
        if typ is not None:
            schemas.append(typ)
    if workflow.context_schema is not None:
        schemas.append(workflow.context_schema)
    for func in funcs:
        try:
            hints = inspect.get_annotations(func, eval_str=True)
        except Exception:  # unresolvable forward references: the user lists allowed_types
            hints = getattr(func, "__annotations__", {}) or {}
        schemas.extend(h for h in hints.values() if not isinstance(h, str))
    return schemas
