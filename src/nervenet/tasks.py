"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
from typing import Any


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
