"""How many runs do their work at once, and in which order they started: what the bounded-runs
tests (``PoolSettings.max_runs``) of every adapter count."""

from __future__ import annotations

import asyncio
import threading
import time

from nervenet import Pool


class Occupancy:
    """Which runs do their work right now, the most at once, and the order they began in
    (entered from any thread: nodes and agents run on in-process workers, sync ones in
    threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.order: list[str] = []

    def enter(self, run: str) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.order.append(run)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1

    def waves(self, size: int) -> list[list[str]]:
        """The runs in the order they began, in groups of ``size``, each group sorted: runs
        that got their slots together may begin their work in either order."""
        return [sorted(self.order[i : i + size]) for i in range(0, len(self.order), size)]


async def all_slots_given_back(pool: Pool, timeout: float = 5.0) -> None:
    """Every run slot of ``pool`` given back, and nothing waiting for one. Waited for (briefly):
    the takeover loop holds slots for a moment while it claims abandoned runs."""
    deadline = time.monotonic() + timeout
    while (pool.run_slots.running, pool.run_slots.waiting) != (0, 0):
        load = pool.run_slots.load()
        assert time.monotonic() < deadline, f"run slots not given back: {load}"
        await asyncio.sleep(0.02)
