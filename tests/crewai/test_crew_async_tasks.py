"""``async_execution`` tasks run at the same time, on different workers."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("crewai")

import crew_apps
import crew_fakes
from crew_fakes import finished
from nervenet_crewai import distribute_crew

from nervenet import Pool

pytestmark = pytest.mark.crewai

LATENCY = 1.0


@pytest.mark.parametrize("kickoff", ["kickoff_async", "akickoff"])
async def test_async_tasks_run_in_parallel_on_two_single_slot_workers(
    pool: Pool, kickoff: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREW_TEST_LATENCY", str(LATENCY))
    crew = distribute_crew(crew_apps.parallel_crew, pool=pool, name="par")
    # One task at a time each: two tasks in flight at once must be on two workers.
    first = await pool.serve(crew, concurrency=1)
    second = await pool.serve(crew, concurrency=1)

    started = time.perf_counter()
    output = await getattr(crew, kickoff)()
    elapsed = time.perf_counter() - started

    slow = crew_fakes.calls("slow")
    assert len(slow) == 2
    assert abs(slow[0]["started"] - slow[1]["started"]) < LATENCY / 2
    assert elapsed < 2 * LATENCY
    assert first.processed >= 1 and second.processed >= 1
    assert output.raw.startswith("editor:")


async def test_agents_sharing_a_limit_key_never_work_at_once(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREW_TEST_LATENCY", str(LATENCY))
    crew = distribute_crew(
        crew_apps.parallel_crew,
        pool=pool,
        name="capped",
        agents={
            "North desk": {"limit_key": "slow-model", "max_concurrency": 1},
            "South desk": {"limit_key": "slow-model"},
            "Editor": {"queue": "editors"},
        },
    )
    desks = await pool.serve(crew, queues="default")
    editors = await pool.serve(crew, queues=["editors"])

    output = finished(await crew.kickoff_async())

    slow = crew_fakes.calls("slow")
    assert len(slow) == 2
    assert abs(slow[0]["started"] - slow[1]["started"]) >= LATENCY * 0.9  # one after the other
    assert output.raw.startswith("editor:")
    assert set(editors.handlers) == {"capped/task/editor"}
    assert editors.processed == 1 and desks.processed == 2
