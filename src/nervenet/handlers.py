"""Task handlers: what a worker runs for a task type, collected for ``nervenet worker``.

The core moves bytes. A handler receives the payload bytes and a :class:`TaskContext` and returns
result bytes. :class:`Handlers` adds a JSON convenience for plain Python functions; adapters
(LangGraph, CrewAI) implement :class:`HandlerSource` on their own objects so that
``nervenet worker app:graph`` can serve them.

A handler may be cancelled: when the dispatch waiting for it is cancelled (its caller cancelled
it, an ``asyncio.wait_for`` around it expired, a sibling task failed), the worker cancels the
handler's asyncio task. The handler sees ``asyncio.CancelledError`` at its current ``await``
(``asyncio.current_task().cancelling()`` is then at least 1), its ``except``/``finally`` blocks
run, and whatever it returns or raises afterwards is dropped: no reply, no cached result. Sync
functions run in threads (``Handlers.task`` on a plain ``def``) cannot be interrupted; they run to
the end and their result is dropped. A handler that raises ``CancelledError`` itself, without
being cancelled, fails its dispatch with the error type ``asyncio.exceptions.CancelledError``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson

from .envelope import MAX_TASK_TYPE_LENGTH
from .errors import ConfigurationError
from .routing import TaskOptions

if TYPE_CHECKING:
    from .pool import Pool


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler knows about the task it runs."""

    task_id: str
    """Stable id of the work (the same across retries and redeliveries)."""
    workflow_id: str
    """The workflow run the task belongs to."""
    task_type: str
    """The handler's task type."""
    attempt: int
    """Coordinator attempt number, from 1."""
    deadline: float
    """Epoch seconds after which nobody waits for the result (0 = none)."""
    trace: str
    """W3C traceparent of the dispatching span, or empty."""
    pool: Pool
    """The worker's pool, for handlers that need Redis themselves (stores, nested dispatch)."""
    emit: Callable[[bytes], None]
    """Send an intermediate frame (streamed output) to the waiting coordinator. Callable from
    any thread; frames arrive in call order and before the task's result."""


Handler = Callable[[bytes, TaskContext], Awaitable[bytes]]


@runtime_checkable
class HandlerSource(Protocol):
    """Anything ``nervenet worker MODULE:ATTR`` can serve."""

    def nervenet_handlers(self) -> Mapping[str, Handler]:
        """Task type -> handler."""
        ...


_VALID_TASK_TYPES: set[str] = set()


def validate_task_type(task_type: str) -> str:
    if task_type in _VALID_TASK_TYPES:  # checked once per name, not once per dispatch
        return task_type
    if not task_type or len(task_type.encode()) > MAX_TASK_TYPE_LENGTH:
        raise ConfigurationError(
            f"task type {task_type!r} must be 1..{MAX_TASK_TYPE_LENGTH} bytes long"
        )
    if any(c in task_type for c in "{}\n\r\t ") or not task_type.isprintable():
        raise ConfigurationError(
            f"task type {task_type!r} may not contain braces or white space "
            "(use e.g. 'support/classify')"
        )
    if len(_VALID_TASK_TYPES) < 10_000:
        _VALID_TASK_TYPES.add(task_type)
    return task_type


class Handlers:
    """A named set of handlers; serve it with ``nervenet worker module:handlers``.

    >>> handlers = Handlers()
    >>> @handlers.task("docs/classify")
    ... async def classify(doc: dict) -> dict:
    ...     return {"kind": "contract"}
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._options: dict[str, TaskOptions] = {}

    def add(self, task_type: str, handler: Handler, **options: Any) -> None:
        """Register a raw bytes handler; ``options`` as for :meth:`task`."""
        validate_task_type(task_type)
        if task_type in self._handlers:
            raise ConfigurationError(f"task type {task_type!r} is registered twice")
        self._handlers[task_type] = handler
        spelled = {k: v for k, v in options.items() if v is not None}
        if spelled:
            self._options[task_type] = TaskOptions.parse(task_type, spelled)

    def task(
        self,
        task_type: str,
        *,
        queue: str | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        limit_key: str | None = None,
        burst: int | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function taking and returning JSON-compatible values.

        The function may be sync (it then runs in a thread) or async, and may take the
        :class:`TaskContext` as a second argument named ``ctx``. ``queue`` says which workers
        run it (``nervenet worker app:handlers --queues gpu``); ``max_concurrency``,
        ``rate_limit`` (``"10/s"``) and ``limit_key`` (shared with other task types) limit it
        across every process (see :mod:`nervenet.limits`).
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add(
                task_type,
                json_handler(fn),
                queue=queue,
                max_concurrency=max_concurrency,
                rate_limit=rate_limit,
                limit_key=limit_key,
                burst=burst,
            )
            return fn

        return register

    def nervenet_handlers(self) -> Mapping[str, Handler]:
        return dict(self._handlers)

    def nervenet_task_options(self) -> Mapping[str, TaskOptions]:
        return dict(self._options)

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._handlers


def json_handler(fn: Callable[..., Any]) -> Handler:
    """Adapt ``fn(value[, ctx])`` over JSON values to a bytes :data:`Handler`."""
    wants_ctx = "ctx" in inspect.signature(fn).parameters
    is_async = inspect.iscoroutinefunction(fn)

    async def handle(payload: bytes, ctx: TaskContext) -> bytes:
        value = orjson.loads(payload)
        args = (value, ctx) if wants_ctx else (value,)
        result = await fn(*args) if is_async else await asyncio.to_thread(fn, *args)
        return orjson.dumps(result)

    handle.__name__ = getattr(fn, "__name__", "handler")
    return handle


def handlers_of(target: object) -> Mapping[str, Handler]:
    """The handlers ``target`` serves, or a clear error saying what would work."""
    if isinstance(target, HandlerSource):
        handlers = target.nervenet_handlers()
    elif isinstance(target, Mapping):
        handlers = target
    else:
        raise ConfigurationError(
            f"{type(target).__name__} object cannot be served: pass a nervenet Handlers, a "
            "graph made with nervenet_langgraph.distribute, or a crew made with "
            "nervenet_crewai.distribute_crew"
        )
    if not handlers:
        raise ConfigurationError("the target registers no task types; nothing to serve")
    for task_type in handlers:
        validate_task_type(task_type)
    return handlers
