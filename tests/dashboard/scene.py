"""A pool with something of everything for the dashboard to show, hostile strings included:
finished, failed, running, queued and ghost runs, escalations, a backlog nobody serves."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from nervenet import Handlers, Pool, RunStatus, TaskEscalated
from nervenet.envelope import TaskEnvelope

#: Would run in the page if anything were not escaped; the browser test checks it never did.
HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
HOSTILE_TYPE = "<img/src=x/onerror=window.__pwned=3>"


@dataclass
class Scene:
    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    runs: dict[str, str] = field(default_factory=dict)
    pool: Pool = field(init=False)  # set by the test's fixture once the scene is built

    def handlers(self) -> Handlers:
        h = Handlers()

        @h.task("shop/classify")
        async def classify(value: Any) -> Any:
            await asyncio.sleep(0.02)
            return value

        @h.task("shop/ship")
        async def ship(value: Any) -> Any:
            raise RuntimeError(f"carrier said {HOSTILE}")

        @h.task("shop/wait")
        async def wait(value: Any) -> Any:
            self.started.set()
            await self.release.wait()
            return value

        return h

    async def run(self, pool: Pool, run_id: str, *task_types: str, wait: bool = True) -> Any:
        coordinator = pool.coordinator(run_id)

        async def body() -> bytes:
            for i, task_type in enumerate(task_types):
                await coordinator.dispatch(
                    task_type, b'{"order": 42}', task_id=f"{run_id}/{i}", retries=0
                )
            return b"ok"

        handle = await pool.workflows.start("shop", run_id, b"", body, thread=f"thread-{run_id}")
        if wait:
            with contextlib.suppress(TaskEscalated):
                await handle.result(timeout=20)
        return handle

    async def build(self, pool: Pool) -> None:
        """Everything, on a pool that has a worker for ``handlers()``."""
        for i in range(3):
            await self.run(pool, f"order-{i}", "shop/classify", "shop/classify")
        await self.run(pool, "order-failed", "shop/classify", "shop/ship")
        self.running = await self.run(
            pool, "order-running", "shop/classify", "shop/wait", wait=False
        )
        await asyncio.wait_for(self.started.wait(), 20)
        await pool.workflows.enqueue("shop", "order-queued", b"", thread="thread-q")
        async with pool.transport.redis.pipeline(transaction=False) as pipe:
            pool.runs.add_begin(pipe, "order-ghost", "shop", status=RunStatus.RUNNING)
            pipe.hset(pool.keys.run("order-ghost"), "owner", "dead" * 8)  # a process that died
            await pipe.execute()
        pool.runs.recorded.discard("order-ghost")  # as if its process had died
        await pool.publish(
            TaskEnvelope("t-hostile", "wf", HOSTILE_TYPE, 1, 0.0, pool.inbox.address, b"{}")
        )
        await pool.escalate(
            TaskEnvelope("t-x", "order-x", "shop/classify", 1, 0.0, pool.inbox.address, b"{}"),
            f"operator test {HOSTILE}",
        )
        await pool.limits.set("carrier-api", max_concurrency=4)
