"""nervenet's coordinator process: each workflow's Pregel loop runs here, its nodes on the workers.

    NERVENET_REDIS_URL=... python runner_nervenet.py [--durable]   # spoken to by run.py (loadgen)

With ``--durable`` every workflow is a durable run (``asubmit``, run id = workflow id, checkpoints
in Redis): if this process is killed, another coordinator process takes its runs over. The extra
``await_runs`` command waits for runs another (dead) process started and checks their results.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import loadgen
import nervenet_app
import workload
from langchain_core.runnables import RunnableConfig
from nervenet_langgraph.wire import unpack

from nervenet.owned_process import tune_collector

DURABLE = "--durable" in sys.argv
graph = nervenet_app.durable_graph if DURABLE else nervenet_app.graph
pool = graph.nervenet.pool


async def setup() -> None:
    await pool.ensure_started()
    # This process is a dedicated coordinator, as `nervenet serve` runs: it gets its settings.
    tune_collector()


async def invoke(wf: str) -> dict[str, Any]:
    if DURABLE:
        config: RunnableConfig = {"configurable": {"thread_id": wf, "__nervenet_run_id": wf}}
        run = await graph.asubmit(workload.initial_state(wf), config)
        state = await run.result()
    else:
        state = await graph.ainvoke(workload.initial_state(wf))
    return workload.summary(state)


async def await_runs(cmd: dict[str, Any]) -> dict[str, Any]:
    """Wait for runs started elsewhere; ``[wf, end, status]`` each, seconds since the command."""
    t0 = time.monotonic()

    async def one(wf: str) -> list[Any]:
        try:
            raw = await asyncio.wait_for(pool.workflows.wait(wf), cmd.get("timeout", 60.0))
            workload.check(wf, workload.summary(unpack(graph.nervenet.serde, raw)))
            status = "ok"
        except TimeoutError:
            status = "timeout"
        except Exception as exc:
            status = f"error: {type(exc).__name__}: {str(exc)[:200]}"
        return [wf, time.monotonic() - t0, status]

    records = await asyncio.gather(*(one(wf) for wf in cmd["runs"]))
    return {"records": records, "takeovers": pool.workflows.takeovers}


if __name__ == "__main__":
    loadgen.serve(
        invoke,
        setup=setup,
        extra_ops={"await_runs": await_runs},
        info={"system": "nervenet", "process_id": pool.process_id},
    )
