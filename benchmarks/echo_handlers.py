"""The handler the dispatch benchmarks serve: it returns its payload, so only the plumbing is timed.

Served from the benchmarks folder by

    cd benchmarks && nervenet worker echo_handlers:handlers --redis redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

from nervenet import TaskContext

TASK_TYPE = "bench/echo"


async def echo(payload: bytes, ctx: TaskContext | None) -> bytes:
    return payload


handlers = {TASK_TYPE: echo}
