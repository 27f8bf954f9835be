"""Reach a pool's event loop from synchronous code and from other event loops.

A pool's connections, reply stream and in-process workers live on one event loop, its *home*: the
loop that started it. Synchronous callers (``graph.invoke`` runs nodes in worker threads) and
callers on another loop must hop to the home loop instead of touching its objects directly. A
pool first used from synchronous code makes its home in a private daemon thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .cancelling import outlast
from .errors import ConfigurationError

T = TypeVar("T")


class Portal:
    """A home event loop and the means to run coroutines on it from anywhere."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def adopt_running_loop(self) -> None:
        """Make the running loop home, unless a home is already set."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.get_running_loop()

    def _home_for_sync_caller(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    ready.set()
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="nervenet-portal", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the home loop from synchronous code and wait for its result."""
        home = self._home_for_sync_caller()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is home:
            raise ConfigurationError(
                "a synchronous nervenet call was made from inside the pool's own event loop, "
                "which would block it; use the async API (e.g. `await graph.ainvoke(...)`)"
            )
        if not home.is_running():
            raise ConfigurationError(
                "the pool's event loop is not running (it was started in an event loop that "
                "has finished); create the pool inside the loop that uses it"
            )
        return _Handoff(make, home).future.result()

    def is_home(self) -> bool:
        """Whether the caller runs on the home loop (a coroutine can then be awaited as is)."""
        home = self._loop
        try:
            return home is not None and home is asyncio.get_running_loop()
        except RuntimeError:
            return False

    async def run(self, make: Callable[[], Awaitable[T]], *, cancel_grace: float = 10.0) -> T:
        """Await ``make()`` on the home loop from any loop (directly when already home).

        Cancelling the caller cancels ``make()`` and, as awaiting a cancelled task does in one
        loop, returns only once it has finished (its ``except``/``finally`` blocks ran), or after
        ``cancel_grace`` seconds if the home loop does not finish it.
        """
        running = asyncio.get_running_loop()
        home = self._loop
        if home is None or home is running or home.is_closed():
            if home is None or home.is_closed():
                self.adopt_running_loop()
            return await make()
        if not home.is_running():
            raise ConfigurationError(
                "the pool's event loop is not running; create the pool inside the loop that uses it"
            )
        handoff = _Handoff(make, home)
        outcome = asyncio.wrap_future(handoff.future)
        try:
            return await asyncio.shield(outcome)
        except asyncio.CancelledError:
            if handoff.cancel():
                await outlast(outcome, cancel_grace)
            raise

    def close(self) -> None:
        """Stop the private thread's loop, if this portal made one."""
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            self._thread = None
            self._loop = None


async def _awaitable(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


class _Handoff(Generic[T]):
    """``make()`` started on ``home`` in an empty context, its outcome in ``future``.

    Unlike ``run_coroutine_threadsafe``, which runs the task in a copy of the *caller's*
    context: the caller's context variables (LangChain's config of the calling node, which
    reaches the whole graph run) would leak into the pool's loop and stay alive for as long as
    anything there holds that context, such as redis-py's cancelled timeout timers.
    """

    def __init__(self, make: Callable[[], Awaitable[T]], home: asyncio.AbstractEventLoop) -> None:
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._home = home
        self._task: asyncio.Task[T] | None = None
        home.call_soon_threadsafe(self._start, make, context=contextvars.Context())

    def cancel(self) -> bool:
        """Ask for the task's cancellation; ``future`` ends once it has stopped. False if the
        home loop is gone, so nothing will end it. (Callbacks run in the order they were
        scheduled, so the task exists when the request reaches the home loop.)"""
        try:
            self._home.call_soon_threadsafe(self._cancel_on_home)
        except RuntimeError:  # home loop closed
            return False
        return True

    def _start(self, make: Callable[[], Awaitable[T]]) -> None:
        self._task = self._home.create_task(_awaitable(make), context=contextvars.Context())
        self._task.add_done_callback(self._settle)

    def _cancel_on_home(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _settle(self, done: asyncio.Task[T]) -> None:
        if done.cancelled():
            self.future.cancel()
        elif (error := done.exception()) is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(done.result())
