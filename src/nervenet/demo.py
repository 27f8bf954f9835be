"""``nervenet demo``: a few hundred small multi-step workflows through a pool, with figures.

The workload is pluggable: adapters register richer ones under the ``nervenet.demos`` entry-point
group (the LangGraph adapter registers the document pipeline as a real ``StateGraph``), so the core
never imports them. Without any, a plain-handler version of the same pipeline runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol

import orjson

from .handlers import Handlers
from .pool import Pool


class DemoWorkload(Protocol):
    """What ``nervenet demo`` runs."""

    title: str
    """One line shown above the progress bar."""

    def handlers(self, pool: Pool) -> object:
        """What the demo's workers on ``pool`` serve (a Handlers, a distributed graph, ...)."""
        ...

    async def run_workflow(self, pool: Pool, index: int) -> None:
        """Run workflow ``index`` to completion; raise if its result is wrong."""
        ...


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo measured."""

    workflows: int
    """Workflows completed."""
    seconds: float
    """Wall time of the whole run."""
    p50_ms: float
    """Median workflow latency."""
    p99_ms: float
    """99th percentile workflow latency."""

    @property
    def per_second(self) -> float:
        return self.workflows / self.seconds if self.seconds else 0.0


def _stable_digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


class PlainPipeline:
    """classify -> extract -> validate -> summarize as plain JSON handlers."""

    title = "document pipeline (plain handlers): classify -> extract -> validate -> summarize"

    def __init__(self, step_latency: float = 0.002) -> None:
        self.step_latency = step_latency
        self._handlers = Handlers()
        latency = step_latency

        @self._handlers.task("demo/classify")
        async def classify(doc: dict[str, str]) -> dict[str, str]:
            await asyncio.sleep(latency)
            kinds = ("contract", "invoice", "letter")
            return {**doc, "kind": kinds[_stable_digest(doc["text"]) % 3]}

        @self._handlers.task("demo/extract")
        async def extract(doc: dict[str, str]) -> dict[str, object]:
            await asyncio.sleep(latency)
            return {**doc, "parties": sorted(set(doc["text"].split()[:3]))}

        @self._handlers.task("demo/validate")
        async def validate(doc: dict[str, object]) -> dict[str, object]:
            await asyncio.sleep(latency)
            return {**doc, "valid": bool(doc["parties"])}

        @self._handlers.task("demo/summarize")
        async def summarize(doc: dict[str, object]) -> dict[str, object]:
            await asyncio.sleep(latency)
            return {"id": doc["id"], "summary": f"{doc['kind']} between {doc['parties']}"}

    def handlers(self, pool: Pool) -> object:
        return self._handlers

    async def run_workflow(self, pool: Pool, index: int) -> None:
        coordinator = pool.coordinator(f"demo-{index}")
        state: bytes = orjson.dumps({"id": index, "text": f"agreement {index} acme corp"})
        for step in ("classify", "extract", "validate", "summarize"):
            state = await coordinator.dispatch(
                f"demo/{step}", state, task_id=f"demo-{index}-{step}", timeout=30
            )
        result = orjson.loads(state)
        if result["id"] != index or "summary" not in result:
            raise AssertionError(f"workflow {index} produced {result!r}")


def find_workload(name: str | None) -> DemoWorkload:
    """The named workload, else the richest one installed, else the plain pipeline."""
    available = {ep.name: ep for ep in entry_points(group="nervenet.demos")}
    if name == "plain":
        return PlainPipeline()
    candidates = [name] if name else sorted(available)
    for candidate in candidates:
        ep = available.get(candidate)
        if ep is None:
            continue
        try:
            factory = ep.load()
        except ImportError:
            if name:  # asked for by name: say what is missing
                raise
            continue
        workload: DemoWorkload = factory()
        return workload
    if name:
        raise LookupError(f"no demo workload {name!r}; installed: plain, {', '.join(available)}")
    return PlainPipeline()


async def run_demo(
    pool: Pool,
    workload: DemoWorkload,
    *,
    workflows: int,
    concurrency: int,
    on_progress: Callable[[], None] = lambda: None,
) -> DemoReport:
    """Run ``workflows`` workflows, at most ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(index: int) -> None:
        async with gate:
            started = time.perf_counter()
            await workload.run_workflow(pool, index)
            latencies.append(time.perf_counter() - started)
            on_progress()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(workflows)))
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    p99_index = min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))
    return DemoReport(
        workflows=len(latencies),
        seconds=seconds,
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=ordered[p99_index] * 1000,
    )
