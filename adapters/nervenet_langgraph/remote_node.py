"""Coordinator side of a distributed node: stands in for the node's function inside Pregel.

Only the node's own function (``PregelNode.bound``) leaves the process. Everything around it stays
LangGraph's own code on the coordinator: the Pregel loop, the node's writers (state updates,
``Command`` routing, ``Send``), conditional edges reading state through real reducers,
``RetryPolicy`` handling, checkpoints, and the ``values``/``updates``/``debug``/``tasks`` streams.
What the function would have done to its surroundings on the worker comes back and is replayed
here: writes it sent (``interrupt()`` resume bookkeeping), the null-resume value it consumed,
custom stream chunks and LLM tokens (as frames, before the result), and its exception, rebuilt
as its own type.
"""

from __future__ import annotations

import contextvars
import hashlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langgraph._internal._constants import (
    CONF,
    CONFIG_KEY_CHECKPOINT_MAP,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_DURABILITY,
    CONFIG_KEY_RESUMING,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
    CONFIG_KEY_THREAD_ID,
)
from langgraph._internal._runnable import RunnableCallable
from langgraph.errors import GraphInterrupt, ParentCommand
from langgraph.pregel._messages import StreamMessagesHandler
from langgraph.runtime import _no_op_stream_writer
from langgraph.types import Interrupt

from nervenet import Coordinator, RemoteTaskError

from .runs import RUN_ID_KEY
from .wire import pack, revive_exception, unpack

if TYPE_CHECKING:
    from .graph import Distribution


def remote_runnable(distribution: Distribution, task_type: str, node: str, trace: bool) -> Any:
    """A ``RunnableCallable`` that runs node ``node`` on the pool as ``task_type``."""
    remote = RemoteNode(distribution, task_type, node)
    return RunnableCallable(remote.invoke, remote.ainvoke, name=node, trace=trace, recurse=False)


class RemoteNode:
    def __init__(self, distribution: Distribution, task_type: str, node: str) -> None:
        self.distribution = distribution
        self.task_type = task_type
        self.node = node

    def invoke(self, input: Any, config: RunnableConfig) -> Any:
        """Sync graphs run nodes in threads: hop onto the pool's loop and wait there."""
        pool = self.distribution.pool
        return self._settle(pool.call_sync(lambda: self._dispatch(input, config)), config)

    async def ainvoke(self, input: Any, config: RunnableConfig) -> Any:
        pool = self.distribution.pool
        return self._settle(await pool.on_home(lambda: self._dispatch(input, config)), config)

    async def _dispatch(self, input: Any, config: RunnableConfig) -> dict[str, Any]:
        serde = self.distribution.serde
        call = describe_call(self.node, input, config)
        payload = pack(serde, call)
        conf = config.get(CONF, {})
        pool = self.distribution.pool
        run_id = conf.get(RUN_ID_KEY)
        if run_id is not None:
            pool.workflows.check_owned(run_id)  # a zombie coordinator stops here
        workflow_id = str(run_id or conf.get(CONFIG_KEY_THREAD_ID) or config.get("run_id") or "-")
        coordinator = Coordinator(pool, workflow_id)
        try:
            raw = await coordinator.dispatch(
                self.task_type,
                payload,
                task_id=self._task_id(call, conf),
                retries=0,  # the node's RetryPolicy runs here, in LangGraph's own retry loop
                escalate_errors=False,
                wait_for_worker=self.distribution.wait_for_worker,
                on_frame=self._frame_relay(config),
            )
        except RemoteTaskError as exc:
            if not exc.error_data:
                raise
            outcome = unpack(serde, exc.error_data)
            outcome["traceback"] = exc.remote_traceback
            outcome["type_name"] = exc.error_type
            return dict(outcome)
        return dict(unpack(serde, raw))

    def _task_id(self, call: dict[str, Any], conf: dict[str, Any]) -> str:
        """Deterministic per LangGraph task (checkpoint, step, node) and the resume values it
        was given, so a resumed run is answered from the worker's result cache."""
        lg_task_id = conf.get(CONFIG_KEY_TASK_ID) or uuid.uuid4().hex
        resume = pack(self.distribution.serde, [call["resume"], call["null_resume"]])
        digest = hashlib.blake2b(resume, digest_size=6).hexdigest()
        return f"{self.distribution.name}:{lg_task_id}:{digest}"

    def _settle(self, outcome: dict[str, Any], config: RunnableConfig) -> Any:
        """Replay the worker's side effects on this task's real context, then return or raise."""
        conf = config.get(CONF, {})
        writes = [tuple(w) for w in outcome.get("writes", ())]
        if writes:
            conf[CONFIG_KEY_SEND](writes)
        scratchpad = conf.get(CONFIG_KEY_SCRATCHPAD)
        if scratchpad is not None:
            scratchpad.resume[:] = outcome.get("resume", scratchpad.resume)
            if outcome.get("null_consumed"):
                scratchpad.get_null_resume(True)
        kind = outcome.get("kind", "value")
        if kind == "value":
            return outcome.get("value")
        if kind == "interrupt":
            raise GraphInterrupt(tuple(_as_interrupt(i) for i in outcome["interrupts"]))
        if kind == "parent":
            raise ParentCommand(outcome["command"])
        raise revive_exception(
            outcome.get("type_name", "builtins.Exception"),
            list(outcome.get("args", [])),
            outcome.get("traceback", ""),
        )

    def _frame_relay(self, config: RunnableConfig) -> Callable[[bytes], None]:
        serde = self.distribution.serde
        runtime = config.get(CONF, {}).get(CONFIG_KEY_RUNTIME)
        writer = getattr(runtime, "stream_writer", _no_op_stream_writer)
        message_handlers = messages_handlers(config)
        # LangGraph's stream writer finds the node's namespace through get_config(): call it
        # inside a context that holds this node's config, as it would be inside the node.
        node_context = contextvars.copy_context()
        node_context.run(var_child_runnable_config.set, config)
        # Tuples in the task's metadata come back from msgpack as lists: restore the originals.
        task_metadata = config.get("metadata", {})

        def relay(raw: bytes) -> None:
            frame = unpack(serde, raw)
            if frame[0] == "custom":
                node_context.run(writer, frame[1])
            elif frame[0] == "messages":
                _, namespace, message, metadata = frame
                metadata = {**metadata, **task_metadata}
                for handler in message_handlers:
                    handler.seen.add(message.id)  # the node's output repeats it: don't re-emit
                    handler.stream((tuple(namespace), "messages", (message, metadata)))

        return relay


def describe_call(node: str, input: Any, config: RunnableConfig) -> dict[str, Any]:
    """The parts of a task's context a worker needs to rebuild it (no live objects)."""
    conf = config.get(CONF, {})
    scratchpad = conf.get(CONFIG_KEY_SCRATCHPAD)
    runtime = conf.get(CONFIG_KEY_RUNTIME)
    info = getattr(runtime, "execution_info", None)
    handlers = messages_handlers(config)
    return {
        "node": node,
        "input": input,
        "conf": _user_configurable(conf),
        "task_id": conf.get(CONFIG_KEY_TASK_ID),
        "checkpoint_ns": conf.get(CONFIG_KEY_CHECKPOINT_NS, ""),
        "checkpoint_map": conf.get(CONFIG_KEY_CHECKPOINT_MAP, {}),
        "resuming": bool(conf.get(CONFIG_KEY_RESUMING, False)),
        "durability": conf.get(CONFIG_KEY_DURABILITY),
        "metadata": _plain(config.get("metadata", {})),
        "tags": list(config.get("tags", [])),
        "run_name": config.get("run_name"),
        "recursion_limit": config.get("recursion_limit"),
        "resume": list(scratchpad.resume) if scratchpad is not None else [],
        "null_resume": scratchpad.get_null_resume(False) if scratchpad is not None else None,
        "step": getattr(scratchpad, "step", 0),
        "stop": getattr(scratchpad, "stop", 0),
        "context": getattr(runtime, "context", None),
        "previous": getattr(runtime, "previous", None),
        "execution": _execution_info(info),
        "stream_custom": getattr(runtime, "stream_writer", _no_op_stream_writer)
        is not _no_op_stream_writer,
        "stream_messages": (
            {"subgraphs": handlers[0].subgraphs, "parent_ns": handlers[0].parent_ns}
            if handlers
            else None
        ),
    }


def messages_handlers(config: RunnableConfig) -> list[StreamMessagesHandler]:
    callbacks = config.get("callbacks")
    handlers = getattr(callbacks, "handlers", callbacks) or []
    return [h for h in handlers if isinstance(h, StreamMessagesHandler)]


def _user_configurable(conf: dict[str, Any]) -> dict[str, Any]:
    """User keys of ``configurable`` (``thread_id``, ``user_id``...), never LangGraph's internals."""
    return {
        k: v
        for k, v in conf.items()
        if not k.startswith("__") and k not in (CONFIG_KEY_CHECKPOINT_MAP,) and _plain_value(v)
    }


def _plain_value(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, tuple, dict))


def _plain(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if _plain_value(v)}


def _execution_info(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "checkpoint_id": info.checkpoint_id,
        "checkpoint_ns": info.checkpoint_ns,
        "task_id": info.task_id,
        "thread_id": info.thread_id,
        "run_id": info.run_id,
        "node_attempt": info.node_attempt,
        "node_first_attempt_time": info.node_first_attempt_time,
    }


def _as_interrupt(value: Any) -> Interrupt:
    return value if isinstance(value, Interrupt) else Interrupt(**value)
