"""How many workflow runs one process coordinates at once (``PoolSettings.max_runs``).

A process that starts every run it is given at once shares its cores among all of them once
they are more than it can finish: each run's next node waits behind the nodes of every other
run, all of them slow down together, and fewer finish in any minute. Past saturation that
halved nervenet's completed runs per minute in the production benchmark, while arq, whose
workers run at most ``max_jobs`` jobs and leave the rest queued, kept its rate. With a bound,
runs beyond it wait for a slot in the order they came, as jobs wait for a worker in arq and
Celery, and as runs wait for ``N_JOBS_PER_WORKER`` in LangGraph Server: the runs that hold a
slot finish at the speed the machine allows.

Who takes a slot: a root graph run started in this process (``ainvoke``, ``astream``,
``invoke``...; its subgraphs share it), a crew's kickoff started here (``kickoff``,
``kickoff_async``, ``akickoff``, each run of ``kickoff_for_each``), and every durable run this
process runs: started here, taken from the queue (``nervenet serve``) or taken over from a dead
process. A run started from inside a durable run (:func:`in_a_run`) shares its slot: waiting for
a second one could wait forever once every slot is held by a run doing the same. That holds
across a hop to the pool's loop from synchronous code (:func:`keeping_the_run_scope`). A
coordinator process that is full claims no queued or abandoned run, so they stay in Redis for
one with room.

Not an ``asyncio.Semaphore``: runs start on any event loop or thread of the process (a graph
is invoked from synchronous code, from another loop), where a semaphore serves one loop, and
claims need "up to n slots now, without waiting", which it does not offer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_IN_A_RUN: ContextVar[bool] = ContextVar("nervenet_in_a_run", default=False)


def in_a_run() -> bool:
    """Whether the caller runs inside a durable run of this process (which holds a slot)."""
    return _IN_A_RUN.get()


def mark_in_a_run() -> None:
    """Called first thing in a durable run's own task: runs it starts share its slot."""
    _IN_A_RUN.set(True)


def keeping_the_run_scope(make: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """``make`` for a hop to the pool's loop, which starts it in an empty context: if the
    caller runs inside a durable run, what ``make`` starts shares that run's slot too (a crew's
    ``kickoff_for_each`` or a flow's ``kickoff`` called from a flow's synchronous method)."""
    if not in_a_run():
        return make

    async def in_the_callers_run() -> T:
        mark_in_a_run()
        return await make()

    return in_the_callers_run


class _Waiter:
    """One run waiting for a slot, on an event loop (``loop``) or in a blocked thread."""

    __slots__ = ("future", "handed", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] | concurrent.futures.Future[None] = (
            loop.create_future() if loop is not None else concurrent.futures.Future()
        )
        self.handed = False
        """A released slot is this waiter's, whether or not it has woken up yet."""

    def wake(self) -> bool:
        """Tell the waiter its slot is there; False if nobody can hear it (its loop closed)."""
        if self.loop is None:
            self.future.set_result(None)
            return True
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop it waited on is closed, and its wait with it
            return False
        return True


def _resolve(future: asyncio.Future[None] | concurrent.futures.Future[None]) -> None:
    if not future.done():  # cancelled meanwhile: the waiter passes its slot on
        future.set_result(None)


class RunSlots:
    """Slots for runs, handed out in the order they were asked for, to callers on any loop or
    thread. ``limit=None``: no bound (runs are still counted)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("max_runs must be at least 1 (or None: no bound)")
        self.limit = limit
        self.running = 0
        """Slots held: runs of this process under way."""
        self._waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    @property
    def bounded(self) -> bool:
        return self.limit is not None

    @property
    def waiting(self) -> int:
        """Runs waiting for a slot."""
        return len(self._waiters)

    def _take_one_or_queue(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter | None:
        with self._lock:
            if self.limit is None or (not self._waiters and self.running < self.limit):
                self.running += 1
                return None
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
            return waiter

    def _give_up(self, waiter: _Waiter) -> None:
        """A waiter stops waiting (cancelled, interrupted): a slot already handed to it goes on."""
        with self._lock:
            handed = waiter.handed
            if not handed:
                self._waiters.remove(waiter)
        if handed:
            self.release()

    async def acquire(self) -> None:
        """Wait for a slot; those who asked first get one first."""
        waiter = self._take_one_or_queue(asyncio.get_running_loop())
        if waiter is None:
            return
        try:
            await waiter.future  # type: ignore[misc]  # an asyncio future on this loop
        except BaseException:
            self._give_up(waiter)
            raise

    def acquire_blocking(self) -> None:
        """:meth:`acquire` for synchronous code: block this thread until a slot is free."""
        waiter = self._take_one_or_queue(None)
        if waiter is None:
            return
        try:
            waiter.future.result()
        except BaseException:
            self._give_up(waiter)
            raise

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """A slot for the block: waited for, given back when the block ends however it ends."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    @contextlib.contextmanager
    def held_blocking(self) -> Iterator[None]:
        """:meth:`held` for synchronous code."""
        self.acquire_blocking()
        try:
            yield
        finally:
            self.release()

    def load(self) -> str:
        """Runs under way, runs waiting and the bound, as a process announces them on its
        heartbeat: ``"running waiting bound"``, bound ``-`` for none (see :func:`parse_load`)."""
        return f"{self.running} {self.waiting} {self.limit or '-'}"

    def take(self, wanted: int) -> int:
        """Up to ``wanted`` slots now, without waiting: how many were taken. None while runs of
        this process wait, so that claims from Redis never overtake them."""
        with self._lock:
            if self.limit is None:
                taken = wanted
            elif self._waiters:
                taken = 0
            else:
                taken = max(0, min(wanted, self.limit - self.running))
            self.running += taken
            return taken

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots: each goes to the longest waiting run, if any."""
        woken = []
        with self._lock:
            for _ in range(count):
                if self._waiters:
                    waiter = self._waiters.popleft()
                    waiter.handed = True  # `running` already counts it
                    woken.append(waiter)
                else:
                    self.running -= 1
        for waiter in woken:
            if not waiter.wake():
                self.release()  # on to the next one


async def iterated_in_a_slot(slots: RunSlots, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """``stream``, run once a slot is free (its first item is asked for then, not before), the
    slot held until it ends or is closed, and the stream closed with it (a run's stream does
    its work as it is iterated: LangGraph's ``astream``, a streaming crew's chunks)."""
    await slots.acquire()
    try:
        async for item in stream:
            yield item
    finally:
        try:
            aclose: Any = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            slots.release()


def iterated_in_a_slot_sync(slots: RunSlots, stream: Iterator[T]) -> Iterator[T]:
    """:func:`iterated_in_a_slot` for a synchronous stream."""
    slots.acquire_blocking()
    try:
        yield from stream
    finally:
        try:
            close: Any = getattr(stream, "close", None)
            if close is not None:
                close()
        finally:
            slots.release()


def parse_load(load: str) -> tuple[int, int, int | None]:
    """``(running, waiting, bound)`` of what :meth:`RunSlots.load` wrote."""
    running, waiting, bound = load.split()
    return int(running), int(waiting), None if bound == "-" else int(bound)
