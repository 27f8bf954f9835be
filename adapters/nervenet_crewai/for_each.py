"""Many kickoffs at once: each input its own run, a bounded number in flight, a progress bar.

Unlike CrewAI's ``kickoff_for_each_async`` (which gathers every run and fails as a whole), one
failing run does not take the others down: its exception takes its place in the result list, as
with ``asyncio.gather(..., return_exceptions=True)``. Escalated tasks are on the pool's
escalation stream whatever happens here.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from crewai import CrewOutput
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Kickoff = Callable[[dict[str, Any], str], Awaitable[CrewOutput]]


def batch_run_ids(count: int) -> list[str]:
    batch = uuid.uuid4().hex[:12]
    return [f"{batch}-{index}" for index in range(count)]


async def kickoff_each(
    kickoff: Kickoff,
    inputs: Sequence[dict[str, Any]],
    *,
    run_ids: Sequence[str] | None,
    max_concurrency: int,
    progress: bool,
    label: str,
) -> list[CrewOutput | Exception]:
    """Run ``kickoff(inputs[i], run_ids[i])`` for every input, at most ``max_concurrency`` at a
    time; results in input order, an exception in place of each failed run."""
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    ids = list(run_ids) if run_ids is not None else batch_run_ids(len(inputs))
    if len(ids) != len(inputs):
        raise ValueError(f"{len(ids)} run ids for {len(inputs)} inputs")
    gate = asyncio.Semaphore(max_concurrency)
    failures = 0
    with Progress(
        TextColumn(f"{label} kickoffs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        disable=not progress,
        transient=False,
    ) as bar:
        tracker = bar.add_task("kickoffs", total=len(inputs), failed=0)

        async def one(index: int) -> CrewOutput | Exception:
            nonlocal failures
            async with gate:
                try:
                    return await kickoff(inputs[index], ids[index])
                except Exception as exc:
                    failures += 1
                    exc.add_note(f"kickoff of input {index} (run id {ids[index]!r}) failed")
                    return exc
                finally:
                    bar.update(tracker, advance=1, failed=failures)

        return list(await asyncio.gather(*(one(i) for i in range(len(inputs)))))
