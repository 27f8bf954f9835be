"""arq peer's client: enqueue one job per workflow, learn of its result without polling.

    python runner_arq.py REDIS_URL      # in the arq venv; spoken to by run.py (see loadgen)

arq has no result notification (``job.result()`` polls every 0.5 s by default), so the client
subscribes to Redis keyspace events of ``arq:result:*`` and reads a result once it is written:
one round trip per result, and no polling load on Redis charged to arq.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import loadgen
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import result_key_prefix
from arq.jobs import deserialize_result

URL = sys.argv[1]
CHANNEL = f"__keyspace@0__:{result_key_prefix}"
waiters: dict[str, asyncio.Future[None]] = {}
redis: ArqRedis | None = None

listeners: list[asyncio.Future[None]] = []


async def setup() -> None:
    global redis
    redis = await create_pool(RedisSettings.from_dsn(URL))
    await redis.config_set("notify-keyspace-events", "K$")
    pubsub = redis.pubsub()
    await pubsub.psubscribe(CHANNEL + "*")
    # asyncio keeps only a weak reference to a task: hold the listener, or GC may end it.
    listeners.append(asyncio.ensure_future(_listen(pubsub)))


async def _listen(pubsub: Any) -> None:
    async for message in pubsub.listen():
        if message["type"] != "pmessage" or message["data"] != b"set":
            continue
        job_id = message["channel"].decode()[len(CHANNEL) :]
        waiter = waiters.pop(job_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def invoke(wf: str) -> dict[str, Any]:
    assert redis is not None
    job_id = f"{wf}.{uuid.uuid4().hex[:8]}"
    done = asyncio.get_running_loop().create_future()
    waiters[job_id] = done
    try:
        await redis.enqueue_job("run_workflow", wf, _job_id=job_id)
        await done
    finally:
        waiters.pop(job_id, None)
    result = deserialize_result(await redis.get(result_key_prefix + job_id))
    if not result.success:
        raise RuntimeError(f"job failed: {result.result!r}")
    return result.result  # type: ignore[no-any-return]


if __name__ == "__main__":
    loadgen.serve(invoke, setup=setup, info={"system": "arq"})
