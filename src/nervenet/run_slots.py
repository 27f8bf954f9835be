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
``invoke``...; its subgraphs share it), and every durable run this process runs: started
here, taken from the queue (``nervenet serve``) or taken over from a dead process. A run
started from inside a durable run (:func:`in_a_run`) shares its slot: waiting for a second one
could wait forever once every slot is held by a run doing the same. A coordinator process
that is full claims no queued or abandoned run, so they stay in Redis for one with room.

Not an ``asyncio.Semaphore``: runs start on any event loop or thread of the process (a graph
is invoked from synchronous code, from another loop), where a semaphore serves one loop, and
claims need "up to n slots now, without waiting", which it does not offer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from contextvars import ContextVar

_IN_A_RUN: ContextVar[bool] = ContextVar("nervenet_in_a_run", default=False)


def in_a_run() -> bool:
    """Whether the caller runs inside a durable run of this process (which holds a slot)."""
    return _IN_A_RUN.get()


def mark_in_a_run() -> None:
    """Called first thing in a durable run's own task: runs it starts share its slot."""
    _IN_A_RUN.set(True)


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


def parse_load(load: str) -> tuple[int, int, int | None]:
    """``(running, waiting, bound)`` of what :meth:`RunSlots.load` wrote."""
    running, waiting, bound = load.split()
    return int(running), int(waiting), None if bound == "-" else int(bound)
