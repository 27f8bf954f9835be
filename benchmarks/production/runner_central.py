"""Central orchestrator: plain LangGraph ``ainvoke`` of every workflow in this one process.

    python runner_central.py [LIMIT]     # spoken to by run.py over stdin/stdout (see loadgen)

Concurrency is bounded by a semaphore of LIMIT workflows (default 2,000, the largest load).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import loadgen
import workload

limit = asyncio.Semaphore(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000)


async def invoke(wf: str) -> dict[str, Any]:
    async with limit:
        return await workload.run_whole(wf)


if __name__ == "__main__":
    loadgen.serve(invoke, info={"system": "central"})
