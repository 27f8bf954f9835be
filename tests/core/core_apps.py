"""What the worker processes of the core tests serve: ``nervenet worker core_apps:handlers``.

Every execution of ``core/slow`` and ``core/crash`` is recorded in Redis (outside the pool's
namespace) so a test in another process can count runs and wait for a task to start:

* ``test:runs:KEY``  -- INCR per execution
* ``test:pids:KEY``  -- RPUSH of the executing process id
* ``test:started``   -- RPUSH of ``{"key", "pid", "run", "attempt"}`` (a test BLPOPs it)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from nervenet import Handlers, TaskContext

handlers = Handlers()

STARTED = "test:started"


def runs_key(key: str) -> str:
    return f"test:runs:{key}"


def pids_key(key: str) -> str:
    return f"test:pids:{key}"


async def _record_start(key: str, ctx: TaskContext) -> int:
    redis = ctx.pool.transport.redis
    run = int(await redis.incr(runs_key(key)))
    await redis.rpush(pids_key(key), os.getpid())
    record = {"key": key, "pid": os.getpid(), "run": run, "attempt": ctx.attempt}
    await redis.rpush(STARTED, orjson.dumps(record))
    return run


@handlers.task("core/echo")
async def echo(value: Any) -> Any:
    return {"echo": value}


@handlers.task("core/sleep")
async def sleep(value: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``sleep`` seconds and returns its input; touches nothing else in Redis."""
    await asyncio.sleep(value["sleep"])
    return value


@handlers.task("core/nap")
async def nap(value: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Announces its start on ``test:started`` if Redis lets it (runs during an outage must not
    fail for that), then sleeps ``sleep`` seconds and returns its input."""
    with contextlib.suppress(RedisError):
        await ctx.pool.transport.redis.rpush(STARTED, orjson.dumps({"key": value["key"]}))
    await asyncio.sleep(value["sleep"])
    return value


@handlers.task("core/slow")
async def slow(value: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Sleeps ``first`` seconds on its first execution and ``then`` seconds on later ones."""
    run = await _record_start(value["key"], ctx)
    await asyncio.sleep(value["first"] if run == 1 else value.get("then", 0.0))
    return {"key": value["key"], "run": run, "pid": os.getpid()}


@handlers.task("core/slow-sync")
def slow_sync(value: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """``core/slow`` as a plain ``def``: it runs in a thread, which nothing can interrupt."""
    run = ctx.pool.call_sync(lambda: _record_start(value["key"], ctx))
    time.sleep(value["first"] if run == 1 else value.get("then", 0.0))
    return {"key": value["key"], "run": run, "pid": os.getpid()}


@handlers.task("core/crash")
async def crash(value: dict[str, Any], ctx: TaskContext) -> None:
    """Kills the worker process that runs it, every time: a poison task."""
    await _record_start(value["key"], ctx)
    os.kill(os.getpid(), signal.SIGKILL)


@handlers.task("core/fail")
async def fail(value: Any) -> None:
    raise ValueError(f"bad input {value!r}")
