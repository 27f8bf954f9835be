"""Handlers for bench_limits.py: the same echo, once unlimited and once under a cap it never
reaches, so the difference is the price of taking permits alone.

    cd benchmarks && nervenet worker limited_handlers:handlers --redis redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

from typing import Any

from nervenet import Handlers

FREE, CAPPED = "bench/free", "bench/capped"
CAP = 10_000

handlers = Handlers()


@handlers.task(FREE)
async def free(value: Any) -> Any:
    return value


@handlers.task(CAPPED, max_concurrency=CAP)
async def capped(value: Any) -> Any:
    return value
