"""Cancellation, both ways nervenet needs it.

:func:`cancel_and_wait` stops one of nervenet's own background tasks (a read loop, a heartbeat)
for good. :func:`outlast` is for the other side: a caller whose dispatch was cancelled waits for
the remote work to end, the way awaiting a cancelled asyncio task does.

In one process, ``task.cancel()`` delivers ``CancelledError`` into the task at once and whoever
awaits the task resumes after its ``except``/``finally`` blocks ran. A nervenet dispatch reaches
that end only when a worker, or the pool's own loop, confirms it, which takes a round trip. Callers
such as LangGraph's runner cancel a task more than once meanwhile (once when a sibling fails, again
when its executor exits); letting the second cancellation cut the wait short would return before
the work stopped, so the wait below outlasts repeated cancellations, bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def outlast(work: asyncio.Future[Any], timeout: float) -> None:
    """Wait until ``work`` is done, at most ``timeout`` seconds, through cancellations of the
    waiting task (the caller re-raises its own ``CancelledError`` afterwards)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not work.done() and (left := deadline - loop.time()) > 0:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([work], timeout=left)


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` and wait until it has really stopped.

    One cancel is not always enough: redis-py's asyncio client can swallow a cancellation that
    arrives while it connects (seen on Python 3.11), leaving the loop running. Cancel again until
    the task is done.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled():
        task.exception()  # retrieved: a loop that died with an error must not log it later
