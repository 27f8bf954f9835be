"""How many entries each of a worker's blocking reads may take, so that together they never take
more than the worker may run.

On a single server one ``XREADGROUP`` covers every stream a worker serves and takes all its free
slots. On a cluster a command touches one slot, so a worker blocks in one read per partition at
once (see :mod:`nervenet.keys`), and a read that blocks holds the slots it may fill. Tasks are
spread evenly over partitions, so with enough free slots each read takes an equal share. With
fewer free slots than reads (a low ``--concurrency``, or most slots busy with long tasks) some
reads cannot hold any: they queue first in, first out, and the reads that hold slots block for
a short turn (:data:`TURN_MS`), so every partition gets its turn within ``partitions`` turns
(about 70 ms for 6 partitions) instead of one read keeping the slot while tasks wait in another
partition. The price is up to a hundred empty reads a second from such a worker while it is idle,
and a few dozen milliseconds of added latency per task: give cluster workers a concurrency of at
least the partition count.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

#: How long a read blocks while reads take turns (ms).
TURN_MS = 10


class ReadSlots:
    """Free slots of one worker, handed to its ``readers`` blocking reads."""

    def __init__(self, concurrency: int, readers: int, in_flight: Callable[[], int]) -> None:
        self.concurrency = concurrency
        self.readers = readers
        self._in_flight = in_flight
        self._reserved = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    def free(self) -> int:
        """Slots neither running a task nor held by a read in progress."""
        return self.concurrency - self._in_flight() - self._reserved

    async def take(self) -> int:
        """Wait for free slots (in turn with the other reads) and hold this read's share."""
        ahead = bool(self._queue)  # a read that just gave its slots back goes behind the others
        while ahead or self.free() <= 0:
            waiter = asyncio.get_running_loop().create_future()
            if ahead:
                self._queue.append(waiter)
            else:
                self._queue.appendleft(waiter)  # woken, but another read took the slot first
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._queue:
                    self._queue.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self.wake()  # pass on the turn this read was given
                raise
            ahead = False
        free = self.free()
        count = free if self.readers == 1 else -(-free // self.readers)
        self._reserved += count
        return count

    def block_ms(self, usual: int) -> int:
        """How long a read may block: the usual time, or a turn's while slots are scarce."""
        if self.readers == 1 or self.concurrency - self._in_flight() >= self.readers:
            return usual
        return TURN_MS

    def give_back(self, count: int) -> None:
        """A read returned: its unused slots are free again (its entries count as in flight)."""
        self._reserved -= count
        self.wake()

    def wake(self) -> None:
        """Slots were freed (a task ended, a read returned): let waiting reads take them."""
        free = self.free()
        while free > 0 and self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
