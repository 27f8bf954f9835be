"""Celery peer's client: send one task per workflow, learn of its result from the backend.

    python runner_celery.py REDIS_URL    # in the celery venv; spoken to by run.py (see loadgen)

Celery's Redis result backend publishes every stored result on a channel named after its key
(``celery-task-meta-<id>``), which is how ``AsyncResult.get`` waits; this client subscribes to
the pattern once instead of blocking a thread per task.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import loadgen
import redis.asyncio as aioredis
from celery_app import app

PREFIX = "celery-task-meta-"
waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}

listeners: list[asyncio.Future[None]] = []


async def setup() -> None:
    client = aioredis.from_url(sys.argv[1])
    pubsub = client.pubsub()
    await pubsub.psubscribe(PREFIX + "*")
    # asyncio keeps only a weak reference to a task: hold the listener, or GC may end it.
    listeners.append(asyncio.ensure_future(_listen(pubsub)))
    app.connection_for_write().ensure_connection()


async def _listen(pubsub: Any) -> None:
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        waiter = waiters.pop(message["channel"].decode()[len(PREFIX) :], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(json.loads(message["data"]))


async def invoke(wf: str) -> dict[str, Any]:
    task_id = uuid.uuid4().hex
    done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    waiters[task_id] = done
    try:
        app.send_task("production.run_workflow", args=[wf], task_id=task_id)
        meta = await done
    finally:
        waiters.pop(task_id, None)
    if meta.get("status") != "SUCCESS":
        raise RuntimeError(f"task {meta.get('status')}: {meta.get('result')!r}")
    return meta["result"]  # type: ignore[no-any-return]


if __name__ == "__main__":
    loadgen.serve(invoke, setup=setup, info={"system": "celery"})
