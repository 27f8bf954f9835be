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
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("nervenet.threads")

#: Threads beyond the workers' concurrency, for whatever else the process runs in the default
#: executor (DNS look-ups, file I/O of the host app): asyncio's own default size.
HEADROOM = min(32, (os.cpu_count() or 1) + 4)

_reserved: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
#: The executor this module set on a loop, and its size.
_ours: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[ThreadPoolExecutor, int]] = (
    weakref.WeakKeyDictionary()
)


def reserve_threads(count: int) -> None:
    """Make the running loop's default executor run at least ``count`` more threads at once."""
    loop = asyncio.get_running_loop()
    total = _reserved.get(loop, 0) + count
    _reserved[loop] = total
    size = total + HEADROOM
    previous, previous_size = _ours.get(loop, (None, 0))
    if previous_size >= size:
        return
    executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="nervenet-sync")
    loop.set_default_executor(executor)
    _ours[loop] = (executor, size)
    if previous is not None:
        previous.shutdown(wait=False)
    log.debug("default executor of this loop: %d threads", size)


def release_threads(count: int) -> None:
    """Give back a reservation (a stopped worker). The executor is not shrunk: its idle threads
    cost little, and a replacement would have to wait for the busy ones."""
    loop = asyncio.get_running_loop()
    _reserved[loop] = max(0, _reserved.get(loop, 0) - count)
