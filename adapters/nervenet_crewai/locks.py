"""CrewAI's store locks without the quarter-second polling, for processes that build many crews.

Every ``Crew()`` opens CrewAI's replay-log sqlite file under a named file lock, and a thread
that finds the lock taken sleeps 0.25 s before trying again. A worker builds a crew per task and
a coordinator one per kickoff, dozens a second from many threads, so they collided constantly:
measured on a worker, 30 concurrent 0.2 s tasks took 1.07 s, a third of the threads asleep on
the lock. This backend keeps CrewAI's lock *files* (same names, so plain CrewAI processes on the
machine still exclude each other) but queues the threads of one process on an in-process lock
first and polls the file only every 5 ms.

It is installed through CrewAI's own hook (``crewai_core.lock_store.set_lock_backend``), and only
where CrewAI would use its default file locks: a backend set by the application, or Redis locks
(``REDIS_URL``), are left alone.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import md5

import portalocker
import portalocker.exceptions
from crewai_core import lock_store

POLL_SECONDS = 0.005

_install_lock = threading.Lock()


class QueuedFileLocks:
    """A CrewAI lock backend: ``backend(name, timeout=...)`` is a context manager."""

    def __init__(self, poll: float = POLL_SECONDS) -> None:
        self.poll = poll
        self._by_name: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def __call__(self, name: str, *, timeout: float = 120.0) -> Iterator[None]:
        local = self._local(name)
        if not local.acquire(timeout=timeout):
            raise portalocker.exceptions.LockException(f"lock {name!r} not acquired in {timeout}s")
        try:
            file_lock = portalocker.Lock(lock_path(name), timeout=timeout, check_interval=self.poll)
            file_lock.acquire()
            try:
                yield
            finally:
                file_lock.release()  # type: ignore[no-untyped-call]
        finally:
            local.release()

    def _local(self, name: str) -> threading.Lock:
        with self._guard:
            return self._by_name.setdefault(name, threading.Lock())


def lock_path(name: str) -> str:
    """The file CrewAI's default backend locks for ``name`` (see ``crewai_core.lock_store``)."""
    channel = f"crewai:{md5(name.encode(), usedforsecurity=False).hexdigest()}"
    return os.path.join(tempfile.gettempdir(), f"{channel}.lock")


def install() -> bool:
    """Use :class:`QueuedFileLocks` in this process if CrewAI would use its file locks."""
    with _install_lock:
        if lock_store._backend is not None or lock_store._redis_available():
            return False
        lock_store.set_lock_backend(QueuedFileLocks())
        return True
