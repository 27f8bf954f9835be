"""Worker side of a distributed node: rebuild LangGraph's per-task context, run the function.

A bare "call the function with the state" loses what LangGraph gives a node through its config:
``interrupt()`` needs the scratchpad (resume values, counters) and a send channel to record the
resume bookkeeping; ``get_config()`` needs the config context variable; ``writer`` /
``get_stream_writer()`` and ``runtime`` need a ``Runtime``; LLM tokens need a messages callback.
This module rebuilds each from the call description and relays their effects back as frames and
as the outcome, so the coordinator can replay them on the real task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import traceback
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.errors import GraphInterrupt, NodeError, ParentCommand
from langgraph.runtime import ExecutionInfo, Runtime, ServerInfo
from langgraph.store.base import BaseStore

from nervenet import TaskContext, TaskFailure

from ._compat import (
    CONF,
    CONFIG_KEY_CALL,
    CONFIG_KEY_CHECKPOINT_ID,
    CONFIG_KEY_CHECKPOINT_MAP,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_CHECKPOINTER,
    CONFIG_KEY_DURABILITY,
    CONFIG_KEY_NODE_ERROR,
    CONFIG_KEY_READ,
    CONFIG_KEY_RESUMING,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_STREAM,
    CONFIG_KEY_TASK_ID,
    PregelScratchpad,
    is_async_callable,
    is_invalid_resume,
)
from .callbacks import traced, worker_callbacks
from .records import WIRE_VERSION, NodeCall, check_wire
from .streams import WorkerStreams
from .wire import exception_args, pack, qualified_name, revive_exception, unpack

log = logging.getLogger("nervenet.langgraph.node_runner")


class _Counter:
    """A fresh call/interrupt/subgraph counter, as LangGraph gives each task attempt."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> int:
        value, self._next = self._next, self._next + 1
        return value


class _NullResume:
    """The run-wide resume value, peeked by the coordinator; consumption is reported back."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.consumed = False

    def __call__(self, consume: bool = False) -> Any:
        value = self.value
        if consume and value is not None:
            self.consumed = True
            self.value = None
        return value


class _ServerUser(dict[str, Any]):
    """The authenticated user a LangGraph server put in the run, as the worker sees it: the
    ``BaseUser`` protocol (``user.identity`` and ``user["identity"]``) over the shipped fields."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _read_unavailable(*_: Any, **__: Any) -> Any:
    raise RuntimeError(
        "reading live graph state from inside a node is not available on a nervenet worker; "
        "read what the node needs from its input state"
    )


_INLINE_WARNED: set[str] = set()


def _call_inline(
    func: Callable[..., Any], input: tuple[tuple[Any, ...], dict[str, Any]], **_: Any
) -> Any:
    """``@task`` functions called inside a node run right here, inline, on the worker.

    In-process LangGraph schedules them as tasks of the node's loop (checkpointed writes, their
    own retry policy); a worker has no loop of the run, so they behave like plain calls. Nodes
    whose code calls tasks run on the coordinator instead (``functional.TaskDispatch``): only a
    task ``distribute`` could not see from the node's code lands here, and the worker says so.
    """
    name = getattr(func, "__name__", repr(func))
    if name not in _INLINE_WARNED:
        _INLINE_WARNED.add(name)
        log.warning(
            "task %r called inside a node on a worker runs inline, without its retry policy or "
            "checkpoint: distribute() did not find it in the node's code (reached through an "
            "object?); call it by a name the node's code reads so the node orchestrates it",
            name,
        )
    args, kwargs = input
    if is_async_callable(func):
        return asyncio.ensure_future(func(*args, **kwargs))
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    try:
        future.set_result(func(*args, **kwargs))
    except BaseException as exc:
        future.set_exception(exc)
    return future


async def run_node(
    bound: Runnable[Any, Any],
    payload: bytes,
    ctx: TaskContext,
    serde: SerializerProtocol,
    store: BaseStore | None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> bytes:
    """Run one node function for a coordinator; return its packed outcome or raise TaskFailure."""
    call: NodeCall = unpack(serde, payload)
    check_wire(call, "coordinator")
    writes: list[tuple[str, Any]] = []
    null_resume = _NullResume(call["null_resume"])
    resume = list(call["resume"])

    def relay(frame: tuple[Any, ...]) -> None:
        ctx.emit(pack(serde, frame))

    streams = WorkerStreams(call["streams"], relay)
    observers = call.get("observers")
    callbacks = worker_callbacks(observers, streams.callbacks() or [], relay, serde)
    config = _rebuild_config(
        call, writes, null_resume, resume, streams, callbacks, store, checkpointer
    )

    def outcome(**extra: Any) -> dict[str, Any]:
        return {
            "wire": WIRE_VERSION,
            "writes": [list(w) for w in writes],
            "resume": resume,
            "null_consumed": null_resume.consumed,
            **extra,
        }

    # Each task runs in its own asyncio task, hence its own context: get_config(), interrupt()
    # and get_stream_writer() inside the node (and its threads, which copy it) find this config.
    var_child_runnable_config.set(config)
    try:
        with traced(observers):
            value = await bound.ainvoke(call["input"], config)
    except GraphInterrupt as exc:
        _fail(serde, exc, outcome(kind="interrupt", interrupts=list(exc.args[0])))
    except ParentCommand as exc:
        _fail(serde, exc, outcome(kind="parent", command=exc.args[0]))
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the run was cancelled: the worker stops this task
        # Raised by the node itself: a failure of the node, as LangGraph treats it.
        _fail(serde, exc, outcome(kind="error", args=exception_args(serde, exc)))
    except Exception as exc:
        invalid_resume = is_invalid_resume(exc)
        args = exception_args(serde, exc)
        _fail(serde, exc, outcome(kind="error", args=args, invalid_resume=invalid_resume))
    return pack(serde, outcome(kind="value", value=value))


def _fail(serde: SerializerProtocol, exc: BaseException, outcome: dict[str, Any]) -> None:
    raise TaskFailure(
        str(exc),
        type_name=qualified_name(type(exc)),
        data=pack(serde, outcome),
        traceback="".join(traceback.format_exception(exc)),
    ) from exc


def _rebuild_config(
    call: NodeCall,
    writes: list[tuple[str, Any]],
    null_resume: _NullResume,
    resume: list[Any],
    streams: WorkerStreams,
    callbacks: Any,
    store: BaseStore | None,
    checkpointer: BaseCheckpointSaver[Any] | None,
) -> RunnableConfig:
    scratchpad = PregelScratchpad(
        step=call["step"],
        stop=call["stop"],
        call_counter=_Counter(),
        interrupt_counter=_Counter(),
        get_null_resume=null_resume,
        resume=resume,
        subgraph_counter=_Counter(),
    )
    execution = call["execution"]
    server_info = call["server_info"]
    runtime: Runtime[Any] = Runtime(
        context=call["context"],
        store=store,
        stream_writer=streams.stream_writer(),
        previous=call["previous"],
        execution_info=ExecutionInfo(**execution) if execution else None,
        server_info=_server_info(server_info),
    ).override(**streams.runtime_overrides())
    config: dict[str, Any] = {
        "metadata": call["metadata"],
        "tags": call["tags"],
        "callbacks": callbacks,
        CONF: {
            **call["conf"],
            CONFIG_KEY_TASK_ID: call["task_id"],
            CONFIG_KEY_SEND: writes.extend,
            CONFIG_KEY_READ: _read_unavailable,
            CONFIG_KEY_CHECKPOINTER: checkpointer,
            CONFIG_KEY_CALL: _call_inline,
            CONFIG_KEY_CHECKPOINT_MAP: call["checkpoint_map"],
            CONFIG_KEY_CHECKPOINT_ID: None,
            CONFIG_KEY_CHECKPOINT_NS: call["checkpoint_ns"],
            CONFIG_KEY_SCRATCHPAD: scratchpad,
            CONFIG_KEY_RUNTIME: runtime,
            CONFIG_KEY_RESUMING: call["resuming"],
        },
    }
    if call["durability"] is not None:
        config[CONF][CONFIG_KEY_DURABILITY] = call["durability"]
    parent_stream = streams.parent_stream()
    if parent_stream is not None:
        config[CONF][CONFIG_KEY_STREAM] = parent_stream
    if call["node_error"] is not None:
        config[CONF][CONFIG_KEY_NODE_ERROR] = _node_error(call["node_error"])
    if call["run_name"]:
        config["run_name"] = call["run_name"]
    if call["recursion_limit"]:
        config["recursion_limit"] = call["recursion_limit"]
    return config  # type: ignore[return-value]


def _node_error(described: dict[str, Any]) -> NodeError:
    """The failure an error-handler node handles, rebuilt as its own exception type."""
    if "type_name" in described:
        error: Any = revive_exception(described["type_name"], described["args"], "")
    else:  # restored from a checkpoint after a resume, as LangGraph kept it
        error = described["error"]
    return NodeError(node=described["node"], error=error)


def _server_info(described: dict[str, Any] | None) -> ServerInfo | None:
    if described is None:
        return None
    user = described["user"]
    return ServerInfo(
        assistant_id=described["assistant_id"],
        graph_id=described["graph_id"],
        user=_ServerUser(user) if user is not None else None,
    )
