"""A node's callbacks and traces across the wire: what a worker's LLM calls, tools and nested
runnables report reaches the callback handlers and the LangSmith trace of the run.

In-process, everything a node calls reports to the handlers in its config (user handlers,
tracers, ``astream_events``), as children of the node's run. On a worker those handlers do not
exist, so:

- :func:`describe_observers` (coordinator) records the node's run id, whether the node has
  handlers that must hear about its children, and the LangSmith trace headers of the node's run;
- :class:`CallbackRelay` (worker) is a handler that turns every callback event into a frame
  ``("callback", event, args, kwargs)``; the worker's root callback manager carries the
  coordinator's run id as parent, so the events name the node's run as their parent;
- :class:`CallbackReplay` (coordinator) hands each event to the node's handlers, as LangChain's
  callback manager would have.

LangSmith is LangSmith's own distributed tracing: the worker enters ``tracing_context`` with the
headers of the node's run and posts its runs itself (a worker needs LangSmith credentials, as any
traced service does); the coordinator's ``LangChainTracer`` is therefore left out of the replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import nullcontext
from typing import Any
from uuid import UUID

from langchain_core.agents import AgentAction, AgentFinish
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler, CallbackManager
from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
    LLMResult,
    RunInfo,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers.langchain import LangChainTracer
from langgraph.checkpoint.serde.base import SerializerProtocol
from langsmith.run_helpers import get_current_run_tree, tracing_context

from ._compat import (
    StreamMessagesHandler,
    StreamToolCallHandler,
    _StreamingCallbackHandler,
    _V2StreamingCallbackHandler,
)
from .wire import qualified_name, revive_exception

Emit = Callable[[tuple[Any, ...]], None]

# Event -> the handler flag that mutes it (as LangChain's callback manager checks them).
_IGNORED_BY: dict[str, str | None] = {
    "on_llm_start": "ignore_llm",
    "on_chat_model_start": "ignore_chat_model",
    "on_llm_new_token": "ignore_llm",
    "on_stream_event": "ignore_llm",
    "on_llm_end": "ignore_llm",
    "on_llm_error": "ignore_llm",
    "on_chain_start": "ignore_chain",
    "on_chain_end": "ignore_chain",
    "on_chain_error": "ignore_chain",
    "on_tool_start": "ignore_agent",
    "on_tool_end": "ignore_agent",
    "on_tool_error": "ignore_agent",
    "on_agent_action": "ignore_agent",
    "on_agent_finish": "ignore_agent",
    "on_retriever_start": "ignore_retriever",
    "on_retriever_end": "ignore_retriever",
    "on_retriever_error": "ignore_retriever",
    "on_custom_event": "ignore_custom_event",
    "on_text": None,
}

# LangChain's output and agent types are not among the serializer's safe types; they travel as
# their fields under an explicit name and are rebuilt from this fixed table, never imported.
_OUTPUT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        LLMResult,
        Generation,
        GenerationChunk,
        ChatGeneration,
        ChatGenerationChunk,
        RunInfo,
        AgentAction,
        AgentFinish,
    )
}
_OUTPUT_TAG = "__nervenet_lc_output__"
_ERROR_TAG = "__nervenet_error__"


def config_handlers(config: RunnableConfig) -> list[BaseCallbackHandler]:
    """The handlers of a task's config (its callbacks are a manager, a list, or nothing)."""
    callbacks: Any = config.get("callbacks")
    handlers: list[BaseCallbackHandler] = getattr(callbacks, "handlers", callbacks) or []
    return handlers


def _observers(config: RunnableConfig) -> list[BaseCallbackHandler]:
    """The node's handlers that hear about its children, less those relayed otherwise: the
    stream handlers (their own frames) and LangSmith's tracer (the worker traces itself)."""
    return [
        h
        for h in config_handlers(config)
        if not isinstance(h, (StreamMessagesHandler, StreamToolCallHandler, LangChainTracer))
    ]


def describe_observers(config: RunnableConfig) -> dict[str, Any] | None:
    """Who watches the node's run, as plain data; ``None`` when nobody does (the common case,
    which then costs the worker nothing)."""
    run_tree = get_current_run_tree()
    if run_tree is None and not config_handlers(config):
        return None  # no handler at all: every dispatch of an unobserved graph stops here
    observers = _observers(config)
    langsmith = run_tree.to_headers() if run_tree is not None else None
    if not observers and langsmith is None:
        return None
    parent_run_id = getattr(config.get("callbacks"), "parent_run_id", None)
    if parent_run_id is None and run_tree is not None:
        parent_run_id = run_tree.id
    return {
        "parent_run_id": str(parent_run_id) if parent_run_id is not None else None,
        "relay": bool(observers),
        # A chat model streams (and reports tokens) only if a handler asks for it.
        "streaming": any(isinstance(h, _StreamingCallbackHandler) for h in observers),
        "v2": any(isinstance(h, _V2StreamingCallbackHandler) for h in observers),
        "langsmith": langsmith,
    }


class CallbackRelay(BaseCallbackHandler):
    """Worker side: every callback event of the node's children, as a frame (one method per
    event in ``_IGNORED_BY``, defined below)."""

    raise_error = False
    run_inline = True  # in order, on the node's own thread or task

    def __init__(self, emit: Emit, serde: SerializerProtocol) -> None:
        self._emit = emit
        self._serde = serde

    def relay(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        frame = ("callback", event, [_encode(a) for a in args], _encode(kwargs))
        try:
            self._emit(frame)
        except Exception:  # a value that does not serialize (a live object in chain inputs)
            self._emit(("callback", event, *(self._as_text(part) for part in frame[2:])))

    def _as_text(self, value: Any) -> Any:
        """``value`` with each part that does not serialize replaced by its ``repr``."""
        if self._serializes(value):
            return value
        if isinstance(value, dict):
            return {key: self._as_text(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._as_text(item) for item in value]
        return repr(value)

    def _serializes(self, value: Any) -> bool:
        try:
            self._serde.dumps_typed(value)
        except Exception:
            return False
        return True


def _relayed(event: str) -> Callable[..., None]:
    def method(self: CallbackRelay, *args: Any, **kwargs: Any) -> None:
        self.relay(event, args, kwargs)

    method.__name__ = event
    return method


for _event in _IGNORED_BY:
    setattr(CallbackRelay, _event, _relayed(_event))


class _StreamingRelay(CallbackRelay, _StreamingCallbackHandler[Any]):
    """Asks the node's chat models to stream, as ``astream_events`` does in-process."""

    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return output

    def tap_output_iter(self, run_id: UUID, output: Iterator[Any]) -> Iterator[Any]:
        return output


class _V2StreamingRelay(_StreamingRelay, _V2StreamingCallbackHandler):
    """Asks for the v2 content-block events (``on_stream_event``)."""


def worker_callbacks(
    described: dict[str, Any] | None,
    handlers: list[Any],
    emit: Emit,
    serde: SerializerProtocol,
) -> CallbackManager | list[Any] | None:
    """The worker's root callbacks: the stream stand-ins plus, if the node is observed, a
    relay, all under the node's run on the coordinator."""
    if described is None:
        return handlers or None
    if described["relay"]:
        relay_class = (
            _V2StreamingRelay
            if described.get("v2")
            else _StreamingRelay
            if described.get("streaming")
            else CallbackRelay
        )
        handlers = [*handlers, relay_class(emit, serde)]
    parent = described["parent_run_id"]
    return CallbackManager(
        handlers, inheritable_handlers=handlers, parent_run_id=UUID(parent) if parent else None
    )


def traced(described: dict[str, Any] | None) -> Any:
    """The LangSmith trace the node runs in on the worker (LangSmith's distributed tracing)."""
    if described is None or described["langsmith"] is None:
        return nullcontext()
    return tracing_context(parent=described["langsmith"], enabled=True)


class CallbackReplay:
    """Coordinator side: replays ``("callback", event, args, kwargs)`` frames on the node's
    handlers, in order.

    Synchronous handlers are called at once. Asynchronous ones (``astream_events``' handler) run
    as tasks on this loop, each event after the previous one, and the node's result waits for
    them (:meth:`drained`): LangChain's synchronous ``handle_event`` would run each of their
    events on a fresh event loop in a thread, a millisecond or more per streamed token.
    """

    def __init__(self, config: RunnableConfig) -> None:
        handlers = _observers(config)
        self._sync = [h for h in handlers if not isinstance(h, AsyncCallbackHandler)]
        self._async: list[BaseCallbackHandler] = [
            h for h in handlers if isinstance(h, AsyncCallbackHandler)
        ]
        self._last: asyncio.Future[None] | None = None

    def __call__(self, frame: tuple[Any, ...]) -> None:
        _, event, args, kwargs = frame
        if event not in _IGNORED_BY:
            return
        ignored_by = _IGNORED_BY[event]
        args, kwargs = _decode(args), _decode(kwargs)
        if self._sync:
            handle_event(self._sync, event, ignored_by, *args, **kwargs)
        if self._async:
            handled = ahandle_event(self._async, event, ignored_by, *args, **kwargs)
            self._last = asyncio.ensure_future(_in_turn(self._last, handled))

    async def drained(self) -> None:
        """Wait until the asynchronous handlers have handled every event replayed so far."""
        if self._last is not None:
            await self._last


async def _in_turn(previous: asyncio.Future[None] | None, handled: Awaitable[None]) -> None:
    """Handle one event once the previous one was handled; an error of a handler that raises
    (``raise_error``) is passed down the chain, so :meth:`CallbackReplay.drained` raises it."""
    earlier: BaseException | None = None
    try:
        if previous is not None:
            await asyncio.wait([previous])
            earlier = None if previous.cancelled() else previous.exception()
    finally:
        await handled
    if earlier is not None:
        raise earlier


def _encode(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)  # run ids: revived below by key, not by a type tag
    if isinstance(value, BaseException):
        return {_ERROR_TAG: qualified_name(type(value)), "args": [str(a) for a in value.args]}
    if _OUTPUT_TYPES.get(type(value).__name__) is type(value):
        fields = {name: _encode(getattr(value, name)) for name in type(value).model_fields}
        return {_OUTPUT_TAG: type(value).__name__, **fields}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if _OUTPUT_TAG in value:
            fields = {k: _decode(v) for k, v in value.items() if k != _OUTPUT_TAG}
            cls = _OUTPUT_TYPES.get(str(value[_OUTPUT_TAG]))
            try:
                return cls(**fields) if cls is not None else fields
            except Exception:  # fields that do not make that type: hand them over as they are
                return fields
        if _ERROR_TAG in value:
            return revive_exception(str(value[_ERROR_TAG]), list(value.get("args", [])), "")
        return {k: _decode_key(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _decode_key(key: str, value: Any) -> Any:
    if key in ("run_id", "parent_run_id") and isinstance(value, str):
        return UUID(value)
    return _decode(value)
