"""Worker side of a distributed node: rebuild LangGraph's per-task context, run the function.

A bare "call the function with the state" loses what LangGraph gives a node through its config:
``interrupt()`` needs the scratchpad (resume values, counters) and a send channel to record the
resume bookkeeping; ``get_config()`` needs the config context variable; ``writer`` /
``get_stream_writer()`` and ``runtime`` need a ``Runtime``; LLM tokens need a messages callback.
This module rebuilds each from the call description and relays their effects back as frames and
as the outcome, so the coordinator can replay them on the real task.
"""

from __future__ import annotations

import traceback
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langgraph._internal._constants import (
    CONF,
    CONFIG_KEY_CHECKPOINT_ID,
    CONFIG_KEY_CHECKPOINT_MAP,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_CHECKPOINTER,
    CONFIG_KEY_DURABILITY,
    CONFIG_KEY_READ,
    CONFIG_KEY_RESUMING,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
)
from langgraph._internal._scratchpad import PregelScratchpad
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.errors import GraphInterrupt, ParentCommand
from langgraph.pregel._messages import StreamMessagesHandler
from langgraph.runtime import ExecutionInfo, Runtime, _no_op_stream_writer
from langgraph.store.base import BaseStore

from nervenet import TaskContext, TaskFailure

from .wire import exception_args, pack, qualified_name, unpack


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


class _RelayMessagesHandler(StreamMessagesHandler):
    """LangGraph's own messages handler, relaying LLM events only.

    Messages in the node's output are emitted by the coordinator's handler when the node ends,
    so the chain callbacks that track them here are switched off.
    """

    def on_chain_start(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def on_chain_end(self, *args: Any, **kwargs: Any) -> Any:
        return None


def _read_unavailable(*_: Any, **__: Any) -> Any:
    raise RuntimeError(
        "reading live graph state from inside a node is not available on a nervenet worker; "
        "read what the node needs from its input state"
    )


async def run_node(
    bound: Runnable[Any, Any],
    payload: bytes,
    ctx: TaskContext,
    serde: SerializerProtocol,
    store: BaseStore | None,
) -> bytes:
    """Run one node function for a coordinator; return its packed outcome or raise TaskFailure."""
    call = unpack(serde, payload)
    writes: list[tuple[str, Any]] = []
    null_resume = _NullResume(call["null_resume"])
    resume = list(call["resume"])

    def relay(frame: tuple[Any, ...]) -> None:
        ctx.emit(pack(serde, frame))

    config = _rebuild_config(call, writes, null_resume, resume, relay, store)

    def outcome(**extra: Any) -> dict[str, Any]:
        return {
            "writes": [list(w) for w in writes],
            "resume": resume,
            "null_consumed": null_resume.consumed,
            **extra,
        }

    # Each task runs in its own asyncio task, hence its own context: get_config(), interrupt()
    # and get_stream_writer() inside the node (and its threads, which copy it) find this config.
    var_child_runnable_config.set(config)
    try:
        value = await bound.ainvoke(call["input"], config)
    except GraphInterrupt as exc:
        _fail(serde, exc, outcome(kind="interrupt", interrupts=list(exc.args[0])))
    except ParentCommand as exc:
        _fail(serde, exc, outcome(kind="parent", command=exc.args[0]))
    except Exception as exc:
        _fail(serde, exc, outcome(kind="error", args=exception_args(serde, exc)))
    return pack(serde, outcome(kind="value", value=value))


def _fail(serde: SerializerProtocol, exc: BaseException, outcome: dict[str, Any]) -> None:
    raise TaskFailure(
        str(exc),
        type_name=qualified_name(type(exc)),
        data=pack(serde, outcome),
        traceback="".join(traceback.format_exception(exc)),
    ) from exc


def _rebuild_config(
    call: dict[str, Any],
    writes: list[tuple[str, Any]],
    null_resume: _NullResume,
    resume: list[Any],
    relay: Any,
    store: BaseStore | None,
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
    runtime: Runtime[Any] = Runtime(
        context=call["context"],
        store=store,
        stream_writer=(lambda chunk: relay(("custom", chunk)))
        if call["stream_custom"]
        else _no_op_stream_writer,
        previous=call["previous"],
        execution_info=ExecutionInfo(**execution) if execution else None,
    )
    callbacks = None
    if call["stream_messages"]:
        options = call["stream_messages"]
        parent_ns = options["parent_ns"]

        def relay_message(chunk: Any) -> None:
            namespace, _, (message, metadata) = chunk
            relay(("messages", list(namespace), message, metadata))

        callbacks = [
            _RelayMessagesHandler(
                relay_message,
                options["subgraphs"],
                parent_ns=tuple(parent_ns) if parent_ns is not None else None,
            )
        ]
    config: dict[str, Any] = {
        "metadata": call["metadata"],
        "tags": call["tags"],
        "callbacks": callbacks,
        CONF: {
            **call["conf"],
            CONFIG_KEY_TASK_ID: call["task_id"],
            CONFIG_KEY_SEND: writes.extend,
            CONFIG_KEY_READ: _read_unavailable,
            CONFIG_KEY_CHECKPOINTER: None,
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
    if call["run_name"]:
        config["run_name"] = call["run_name"]
    if call["recursion_limit"]:
        config["recursion_limit"] = call["recursion_limit"]
    return config  # type: ignore[return-value]
