"""The Celery peer's app: Redis broker and result backend, one task per whole workflow.

    BENCH_REDIS_URL=redis://127.0.0.1:PORT/0 celery -A celery_app worker --pool threads -c 1000

Celery tasks are synchronous while the graph's nodes are ``async``: each worker process keeps one
event loop in a thread and every task (on Celery's thread pool) hands its workflow to that loop
and blocks on the answer, the usual way to run asyncio code under Celery.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import workload
from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("production", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="graphs", daemon=True).start()
    return _loop


@app.task(name="production.run_workflow")
def run_workflow(wf: str) -> dict[str, Any]:
    return asyncio.run_coroutine_threadsafe(workload.run_whole(wf), _event_loop()).result()
