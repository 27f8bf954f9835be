"""The load generator every system's runner process shares, and the protocol the driver speaks.

A runner process is one system's front door: it starts workflows, waits for their final states and
checks each one. The driver (``run.py``) writes one JSON command a line to the runner's stdin; the
runner answers each on its stdout with ``{"id": ..., ...}``. Commands run concurrently, so a
runner can hold a closed loop and, at the same time, answer ``info`` or wait for other runs.

Load shapes (the same for every system, so every system runs the same workflow ids):

* ``closed``: ``clients`` workflows in flight; each client starts its next workflow when its last
  one ends. With K runner processes, runner k takes every K-th workflow number.
* ``open``: Poisson arrivals at ``rate`` per second, from one seeded schedule; runner k starts
  the arrivals whose number is k modulo K.

Each workflow yields a record ``[wf, start, end, ideal, status]`` (seconds since the command
started, status ``ok``, ``timeout``, ``unfinished`` or ``error: ...``); the driver computes the
window figures. Plain Python (no nervenet import): the peers' environments run it too.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import workload

Invoke = Callable[[str], Awaitable[dict[str, Any]]]
"""``invoke(wf)`` runs workflow ``wf`` to its end and returns its :func:`workload.summary`."""
Op = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

_out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol


def send(message: dict[str, Any]) -> None:
    _out.write(json.dumps(message) + "\n")


class Load:
    """Closed- and open-loop load on one ``invoke``."""

    def __init__(self, invoke: Invoke) -> None:
        self.invoke = invoke
        self.in_flight = 0
        self.done = 0

    async def one(self, wf: str, t0: float, timeout: float) -> list[Any]:
        start = time.monotonic() - t0
        self.in_flight += 1
        try:
            result = await asyncio.wait_for(self.invoke(wf), timeout)
            workload.check(wf, result)
            status = "ok"
        except TimeoutError:
            status = "timeout"
        except Exception as exc:  # every failure is a result to count, not a crash
            status = f"error: {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            self.in_flight -= 1
            self.done += 1
        return [wf, start, time.monotonic() - t0, workload.ideal_latency(wf), status]

    async def closed(self, cmd: dict[str, Any]) -> dict[str, Any]:
        clients, k, of = cmd["clients"], cmd.get("index", 0), cmd.get("of", 1)
        prefix, timeout = cmd["prefix"], cmd.get("timeout", 60.0)
        t0 = time.monotonic()
        stop_at = t0 + cmd["warmup"] + cmd["seconds"]
        numbers = itertools.count(k, of)
        records: list[list[Any]] = []

        async def client() -> None:
            while time.monotonic() < stop_at:
                records.append(await self.one(f"{prefix}-{next(numbers)}", t0, timeout))

        tasks: list[asyncio.Future[None]] = [
            asyncio.ensure_future(client()) for _ in range(clients)
        ]
        progress = asyncio.ensure_future(self._progress(cmd)) if cmd.get("progress") else None
        await asyncio.wait(tasks, timeout=stop_at - t0 + cmd.get("drain", timeout))
        return self._finish(records, tasks, progress, t0)

    async def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        rate, k, of = cmd["rate"], cmd.get("index", 0), cmd.get("of", 1)
        prefix, timeout = cmd["prefix"], cmd.get("timeout", 60.0)
        rng = random.Random(f"{workload.SEED}/{prefix}")
        t0 = time.monotonic()
        horizon = cmd["warmup"] + cmd["seconds"]
        records: list[list[Any]] = []
        tasks: list[asyncio.Future[None]] = []

        async def arrival(wf: str) -> None:
            records.append(await self.one(wf, t0, timeout))

        at = 0.0
        for n in itertools.count():
            at += rng.expovariate(rate)
            if at >= horizon:
                break
            if n % of != k:
                continue
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(arrival(f"{prefix}-{n}")))
        if tasks:
            await asyncio.wait(
                tasks, timeout=t0 + horizon + cmd.get("drain", timeout) - time.monotonic()
            )
        return self._finish(records, tasks, None, t0)

    def _finish(
        self,
        records: list[list[Any]],
        tasks: list[asyncio.Future[None]],
        progress: asyncio.Future[None] | None,
        t0: float,
    ) -> dict[str, Any]:
        unfinished = sum(1 for t in tasks if not t.done())
        for task in tasks:
            task.cancel()  # past the drain: counted as unfinished, not waited for
        if progress is not None:
            progress.cancel()
        return {"records": records, "unfinished": unfinished, "elapsed": time.monotonic() - t0}

    async def _progress(self, cmd: dict[str, Any]) -> None:
        while True:
            send({"id": cmd["id"], "progress": {"in_flight": self.in_flight, "done": self.done}})
            await asyncio.sleep(0.05)


def serve(
    invoke: Invoke,
    *,
    setup: Callable[[], Awaitable[None]] | None = None,
    extra_ops: dict[str, Op] | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """Run the protocol loop until ``quit`` or end of input."""
    asyncio.run(_serve(invoke, setup, extra_ops or {}, info or {}))


async def _serve(
    invoke: Invoke,
    setup: Callable[[], Awaitable[None]] | None,
    extra_ops: dict[str, Op],
    info: dict[str, Any],
) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    if setup is not None:
        await setup()
    load = Load(invoke)
    ops: dict[str, Op] = {"closed": load.closed, "open": load.open, **extra_ops}
    running: set[asyncio.Future[None]] = set()

    async def handle(cmd: dict[str, Any]) -> None:
        try:
            if cmd["op"] == "info":
                reply = {"pid": os.getpid(), **info}
            else:
                reply = await ops[cmd["op"]](cmd)
        except Exception:
            reply = {"error": traceback.format_exc()}
        send({"id": cmd["id"], **reply})

    send({"id": "ready", "pid": os.getpid(), **info})
    while True:
        line = await lines.get()
        if line is None:
            break
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        handling = asyncio.ensure_future(handle(cmd))
        running.add(handling)
        handling.add_done_callback(running.discard)
    for task in running:
        task.cancel()
