"""The workload distributed by nervenet: what the runner coordinates and the workers serve.

    NERVENET_REDIS_URL=redis://127.0.0.1:PORT/0 nervenet worker nervenet_app:graph -c 5000
    NERVENET_REDIS_URL=... nervenet worker nervenet_app:durable_graph      # the kill test's workers

``graph`` has no checkpointer, like the peers (none of them checkpoints): its rows measure
dispatching nodes. ``durable_graph`` checkpoints to Redis (``RedisSaver``), so its runs survive
the death of the coordinator process that runs them; the kill test uses it.
``BENCH_UVLOOP=1`` puts the process on uvloop (the benchmark's ``--uvloop``);
``NERVENET_LEAN_CONNECTIONS=0`` runs every Redis command through redis-py, in this process and in
``nervenet worker`` (for an A/B of the lean connections). ``BENCH_MAX_RUNS=N`` bounds the runs a
coordinator process runs at once (``PoolSettings.max_runs``; ``plan.Plan.max_runs``).
"""

from __future__ import annotations

import asyncio
import os
import sys

import workload
from nervenet_langgraph import RedisSaver, distribute

from nervenet import Pool, PoolSettings

URL = os.environ.get("NERVENET_REDIS_URL", "redis://127.0.0.1:6379/0")

if os.environ.get("BENCH_UVLOOP") == "1":
    # Imported before the worker CLI and the runner start their loops, so both run on uvloop.
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        print("BENCH_UVLOOP=1 but uvloop is not installed: asyncio's loop", file=sys.stderr)

MAX_RUNS = os.environ.get("BENCH_MAX_RUNS")  # the plan's bound, in a coordinator process
SETTINGS = PoolSettings(
    lean_connections=os.environ.get("NERVENET_LEAN_CONNECTIONS") != "0",
    max_runs=int(MAX_RUNS) if MAX_RUNS else None,
)

graph = distribute(workload.build(), pool=Pool.from_url(URL, settings=SETTINGS), name="production")
durable_graph = distribute(
    workload.build(),
    pool=Pool.from_url(URL, settings=SETTINGS),
    name="production-durable",
    checkpointer=RedisSaver.from_url(URL),
)
