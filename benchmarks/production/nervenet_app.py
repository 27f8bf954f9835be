"""The workload distributed by nervenet: what the runner coordinates and the workers serve.

    NERVENET_REDIS_URL=redis://127.0.0.1:PORT/0 nervenet worker nervenet_app:graph --concurrency 5000
    NERVENET_REDIS_URL=... nervenet worker nervenet_app:durable_graph      # the kill test's workers

``graph`` has no checkpointer, like the peers (none of them checkpoints): its rows measure
dispatching nodes. ``durable_graph`` checkpoints to Redis (``RedisSaver``), so its runs survive
the death of the coordinator process that runs them; the kill test uses it.
"""

from __future__ import annotations

import os

from nervenet_langgraph import RedisSaver, distribute

import workload
from nervenet import Pool

URL = os.environ.get("NERVENET_REDIS_URL", "redis://127.0.0.1:6379/0")

graph = distribute(workload.build(), pool=Pool.from_url(URL), name="production")
durable_graph = distribute(
    workload.build(),
    pool=Pool.from_url(URL),
    name="production-durable",
    checkpointer=RedisSaver.from_url(URL),
)
