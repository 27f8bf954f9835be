"""A task's streams across the wire: what a node emits on the worker reaches the run's stream.

In-process, a node reaches the caller's stream through objects in its config: the runtime's
``stream_writer`` (``custom``), callback handlers (``messages`` tokens, ``tools`` events), the
parent stream a graph invoked inside the node writes to (``CONFIG_KEY_STREAM``), and the
runtime's ``control`` (drain) and ``heartbeat``. None of them can cross a process boundary, so:

1. :func:`describe_streams` (coordinator) records which of them the task has, as plain data;
2. :class:`WorkerStreams` (worker) rebuilds each as a stand-in that emits a *frame*;
3. :class:`FrameRelay` (coordinator) hands every frame to the task's real object, in order,
   before the node's result is settled.

Frames: ``("custom", checkpoint_ns, chunk)``, ``("messages", i, ns, message_or_event, metadata)``,
``("seen", i, message_id)``,
``("tools", i, ns, payload)`` (``i``: which of the task's handlers), ``("stream", ns, mode,
payload)``, ``("drain", reason)``, ``("heartbeat",)``, and ``("callback", event, args, kwargs)``
for the node's other callback handlers (``callbacks.py``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.pregel.protocol import StreamProtocol
from langgraph.runtime import RunControl, Runtime

from ._compat import (
    CONF,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_STREAM,
    StreamMessagesHandler,
    StreamMessagesHandlerV2,
    StreamToolCallHandler,
    _no_op_heartbeat,
    _no_op_stream_writer,
)
from .callbacks import CallbackReplay, config_handlers

Emit = Callable[[tuple[Any, ...]], None]


class _RelayedSeen(set[str]):
    """A handler's ids of messages already streamed, shared with the coordinator's handler: a
    message streamed here must not be streamed again from the node's output there."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        super().__init__()
        self._emit = emit

    def add(self, message_id: str) -> None:
        if message_id not in self:
            super().add(message_id)
            self._emit(message_id)


class _RelayMessagesHandler(StreamMessagesHandler):
    """LangGraph's own messages handler, relaying LLM events only.

    Messages in the node's output are emitted by the coordinator's handler when the node ends,
    so the chain callbacks that track them here are switched off.
    """

    def on_chain_start(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def on_chain_end(self, *args: Any, **kwargs: Any) -> Any:
        return None


class _RelayMessagesHandlerV2(StreamMessagesHandlerV2):
    """The v2 (content-block events) handler, relaying LLM events only, as above."""

    def on_chain_start(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def on_chain_end(self, *args: Any, **kwargs: Any) -> Any:
        return None


class _RelayedControl(RunControl):
    """The run's drain signal on the worker: a drain requested by the node reaches the run."""

    def __init__(self, reason: str | None, emit: Emit) -> None:
        super().__init__()
        self._drain_reason = reason
        self._emit = emit

    def request_drain(self, reason: str = "shutdown") -> None:
        super().request_drain(reason)
        self._emit(("drain", reason))


def describe_streams(config: RunnableConfig) -> dict[str, Any]:
    """Which of a task's streams and run controls the worker must stand in for."""
    conf = config.get(CONF, {})
    runtime = conf.get(CONFIG_KEY_RUNTIME)
    messages = _handlers(config, StreamMessagesHandler)
    tools = _handlers(config, StreamToolCallHandler)
    stream = conf.get(CONFIG_KEY_STREAM)
    control = getattr(runtime, "control", None)
    return {
        "custom": getattr(runtime, "stream_writer", _no_op_stream_writer)
        is not _no_op_stream_writer,
        "messages": [_handler_options(h) for h in messages],
        "tools": [_handler_options(h) for h in tools],
        "stream_modes": sorted(stream.modes) if stream is not None else None,
        "drain": ({"reason": control.drain_reason} if isinstance(control, RunControl) else None),
        "heartbeat": getattr(runtime, "heartbeat", _no_op_heartbeat) is not _no_op_heartbeat,
    }


class WorkerStreams:
    """Worker-side stand-ins for a task's streams, each emitting frames through ``emit``."""

    def __init__(self, described: dict[str, Any], emit: Emit) -> None:
        self.described = described
        self.emit = emit

    def stream_writer(self) -> Callable[[Any], None]:
        if not self.described["custom"]:
            return _no_op_stream_writer

        def write(chunk: Any) -> None:
            config = var_child_runnable_config.get() or {}
            self.emit(("custom", config.get(CONF, {}).get(CONFIG_KEY_CHECKPOINT_NS), chunk))

        return write

    def callbacks(self) -> list[Any] | None:
        """One relaying handler per handler of the task (a graph streamed inside a node has its
        own besides those it inherits), each with that handler's options."""
        handlers: list[Any] = []
        for index, options in enumerate(self.described["messages"]):
            cls = _RelayMessagesHandlerV2 if options["v2"] else _RelayMessagesHandler
            handler = cls(
                self._relay("messages", index), options["subgraphs"], parent_ns=_ns(options)
            )
            handler.seen = _RelayedSeen(  # type: ignore[assignment]
                lambda message_id, i=index: self.emit(("seen", i, message_id))  # type: ignore[misc]
            )
            handlers.append(handler)
        for index, options in enumerate(self.described["tools"]):
            relay = self._relay("tools", index)
            handlers.append(
                StreamToolCallHandler(relay, options["subgraphs"], parent_ns=_ns(options))
            )
        return handlers or None

    def _relay(self, kind: str, index: int) -> Callable[[Any], None]:
        def relay(chunk: Any) -> None:
            namespace, _, payload = chunk
            parts = payload if kind == "messages" else (payload,)  # messages: (item, metadata)
            self.emit((kind, index, namespace, *parts))

        return relay

    def parent_stream(self) -> StreamProtocol | None:
        """What a graph invoked inside the node streams to (LangGraph's ``CONFIG_KEY_STREAM``)."""
        modes = self.described["stream_modes"]
        if modes is None:
            return None

        def relay_stream(chunk: Any) -> None:
            namespace, mode, payload = chunk
            self.emit(("stream", namespace, mode, payload))

        return StreamProtocol(relay_stream, set(modes))

    def runtime_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if self.described["drain"] is not None:
            overrides["control"] = _RelayedControl(self.described["drain"]["reason"], self.emit)
        if self.described["heartbeat"]:
            overrides["heartbeat"] = lambda: self.emit(("heartbeat",))
        return overrides


class FrameRelay:
    """Coordinator side: replays each frame on the task's real stream objects."""

    def __init__(self, config: RunnableConfig) -> None:
        conf = config.get(CONF, {})
        self.config = config
        self.runtime: Runtime[Any] | None = conf.get(CONFIG_KEY_RUNTIME)
        self.writer = getattr(self.runtime, "stream_writer", _no_op_stream_writer)
        self.messages = _handlers(config, StreamMessagesHandler)
        self.tools = _handlers(config, StreamToolCallHandler)
        self.stream: StreamProtocol | None = conf.get(CONFIG_KEY_STREAM)
        self._callbacks: CallbackReplay | None = None

    def __call__(self, frame: tuple[Any, ...]) -> None:
        kind = frame[0]
        if kind == "drain":
            if self.runtime is not None and self.runtime.control is not None:
                self.runtime.control.request_drain(frame[1])
            return
        if self.runtime is not None:
            # Anything the node emits is progress for an idle timeout (refresh_on="auto").
            self.runtime.heartbeat()
        if kind == "custom":
            self._custom(frame[1], frame[2])
        elif kind == "messages":
            self._message(self.messages[frame[1]], tuple(frame[2]), frame[3], frame[4])
        elif kind == "seen":
            self.messages[frame[1]].seen.add(frame[2])
        elif kind == "tools":
            self.tools[frame[1]].stream((tuple(frame[2]), "tools", frame[3]))
        elif kind == "stream" and self.stream is not None:
            self.stream((tuple(frame[1]), frame[2], frame[3]))  # type: ignore[misc,call-arg]
        elif kind == "callback":
            if self._callbacks is None:
                self._callbacks = CallbackReplay(self.config)
            self._callbacks(frame)

    async def drained(self) -> None:
        """Wait until every frame relayed so far has been handled (asynchronous handlers)."""
        if self._callbacks is not None:
            await self._callbacks.drained()

    def _custom(self, checkpoint_ns: str | None, chunk: Any) -> None:
        # LangGraph's stream writer finds the namespace through get_config(): call it in a
        # context that holds this node's config (with the namespace of the graph that wrote
        # it, when that was a graph the node ran), as it would be inside the node.
        config = self.config
        if checkpoint_ns is not None:
            config = {
                **config,
                CONF: {**config.get(CONF, {}), CONFIG_KEY_CHECKPOINT_NS: checkpoint_ns},
            }
        context = contextvars.copy_context()
        context.run(var_child_runnable_config.set, config)
        context.run(self.writer, chunk)

    def _message(
        self, handler: Any, namespace: tuple[str, ...], item: Any, metadata: dict[str, Any]
    ) -> None:
        if isinstance(item, BaseMessage):
            seen_id = item.id
        else:  # a v2 protocol event; its message comes back in the node's output
            seen_id = item.get("message_id") if item.get("event") == "message-start" else None
        if seen_id:
            handler.seen.add(seen_id)  # the node's output repeats it: don't re-emit
        handler.stream((namespace, "messages", (item, metadata)))


def _handlers(config: RunnableConfig, cls: type) -> list[Any]:
    return [h for h in config_handlers(config) if isinstance(h, cls)]


def _handler_options(handler: Any) -> dict[str, Any]:
    return {
        "subgraphs": handler.subgraphs,
        "parent_ns": handler.parent_ns,
        "v2": isinstance(handler, StreamMessagesHandlerV2),
    }


def _ns(options: dict[str, Any]) -> tuple[str, ...] | None:
    parent_ns = options["parent_ns"]
    return tuple(parent_ns) if parent_ns is not None else None
