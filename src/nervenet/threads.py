"""Threads for synchronous task work, as many as the workers of a loop may run at once.

Synchronous handlers (a plain ``def`` LangGraph node, CrewAI agent work, ``Handlers.task`` on a
``def``) run in the event loop's default executor: LangChain's ``run_in_executor`` always
picks it, and so does ``asyncio.to_thread``. asyncio sizes it ``min(32, cores + 4)`` threads, six on
a 2-core machine, whatever a worker's ``--concurrency`` says; measured before this module: one
worker at concurrency 64 ran 16 sync nodes sleeping 3 s in three waves of six (9.1 s).

So a worker reserves threads for its concurrency on the loop it runs on, and the loop's default
executor is replaced by one at least that large (threads start lazily: a large pool costs
nothing until work needs it). The previous executor, if this module made it, is shut down
without waiting: the work already in it finishes on its own threads.

That executor also remembers which asyncio task submitted each piece of work still running. A
thread cannot be interrupted: cancelling the task that awaits it leaves the code running, so a
stopping worker that handed such a task back would have it run twice (once to completion here,
once on the worker that takes it). :func:`runs_in_a_thread` lets the worker wait for those.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("nervenet.threads")

#: Threads beyond the workers' concurrency, for whatever else the process runs in the default
#: executor (DNS look-ups, file I/O of the host app): asyncio's own default size.
HEADROOM = min(32, (os.cpu_count() or 1) + 4)

_reserved: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
#: The executor this module set on a loop, and its size.
_ours: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[ThreadPoolExecutor, int]] = (
    weakref.WeakKeyDictionary()
)
#: Every executor this module set on a loop (a replaced one still runs its work to the end).
_made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_TrackingExecutor]] = (
    weakref.WeakKeyDictionary()
)


class _TrackingExecutor(ThreadPoolExecutor):
    """A thread pool that knows which asyncio task each running piece of work belongs to."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._lock = threading.Lock()  # done-callbacks run on the pool's threads
        self._work: dict[asyncio.Task[Any], set[Future[Any]]] = {}

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        try:
            task = asyncio.current_task()  # run_in_executor submits on the loop's thread
        except RuntimeError:  # submitted from a thread with no running loop
            task = None
        if task is not None:
            with self._lock:
                self._work.setdefault(task, set()).add(future)
            future.add_done_callback(lambda done: self._forget(task, done))
        return future

    def _forget(self, task: asyncio.Task[Any], future: Future[Any]) -> None:
        with self._lock:
            work = self._work.get(task)
            if work is not None:
                work.discard(future)
                if not work:
                    del self._work[task]

    def running_for(self, task: asyncio.Task[Any]) -> bool:
        with self._lock:
            return any(not f.done() for f in self._work.get(task, ()))


def runs_in_a_thread(task: asyncio.Task[Any]) -> bool:
    """Whether code ``task`` submitted to its loop's default executor is still running (in an
    executor this module made, replaced ones included: their work goes on)."""
    return any(e.running_for(task) for e in _made.get(task.get_loop(), ()))


def reserve_threads(count: int) -> None:
    """Make the running loop's default executor run at least ``count`` more threads at once."""
    loop = asyncio.get_running_loop()
    total = _reserved.get(loop, 0) + count
    _reserved[loop] = total
    size = total + HEADROOM
    previous, previous_size = _ours.get(loop, (None, 0))
    if previous_size >= size:
        return
    executor = _TrackingExecutor(max_workers=size, thread_name_prefix="nervenet-sync")
    loop.set_default_executor(executor)
    _ours[loop] = (executor, size)
    _made.setdefault(loop, []).append(executor)
    if previous is not None:
        previous.shutdown(wait=False)
    log.debug("default executor of this loop: %d threads", size)


def release_threads(count: int) -> None:
    """Give back a reservation (a stopped worker). The executor is not shrunk: its idle threads
    cost little, and a replacement would have to wait for the busy ones."""
    loop = asyncio.get_running_loop()
    _reserved[loop] = max(0, _reserved.get(loop, 0) - count)
