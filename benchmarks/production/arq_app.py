"""The arq peer's worker: each job runs one whole workflow (plain LangGraph) in the worker.

    BENCH_REDIS_URL=redis://127.0.0.1:PORT/0 arq arq_app.WorkerSettings

``max_jobs`` is raised from arq's default of 10 so two workers hold the largest load (2,000 in
flight) and ``poll_delay`` lowered from 0.5 s, the tuning a latency-minded arq user would do.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import workload
from arq.connections import RedisSettings


async def run_workflow(ctx: dict[str, Any], wf: str) -> dict[str, Any]:
    return await workload.run_whole(wf)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [run_workflow]  # arq reads the class attribute
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    max_jobs = 1_000
    poll_delay = 0.02
    job_timeout = 120
    keep_result = 120
