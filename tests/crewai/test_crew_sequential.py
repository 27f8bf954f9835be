"""A distributed crew returns what the plain crew returns, with the agents' work on workers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("crewai")

import crew_apps
import crew_fakes
from crew_fakes import finished
from crewai import Crew, CrewOutput
from nervenet_crewai import distribute_crew

from nervenet import Pool

pytestmark = pytest.mark.crewai

INPUTS = {"topic": "tides"}


async def plain_kickoff(factory: Callable[[], Crew], inputs: dict[str, Any]) -> CrewOutput:
    # CrewAI's sync kickoff refuses to run agents on a thread with a running loop.
    return await asyncio.to_thread(lambda: finished(factory().kickoff(inputs=inputs)))


async def test_sequential_output_equals_the_plain_crews(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.sequential_crew, INPUTS)
    crew_fakes.CALLS.clear()

    output = finished(await crew.kickoff_async(inputs=INPUTS))

    assert output.model_dump() == expected.model_dump()
    assert output.token_usage == expected.token_usage
    assert all(c["task_id"] for c in crew_fakes.calls())
    assert len(crew_fakes.calls()) == 3


async def test_native_akickoff_output_equals_the_plain_crews(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.sequential_crew, INPUTS)

    output = finished(await crew.akickoff(inputs=INPUTS))

    assert output.model_dump() == expected.model_dump()


def test_sync_kickoff_from_plain_code_equals_the_plain_crews() -> None:
    expected = finished(crew_apps.sequential_crew().kickoff(inputs=INPUTS))
    crew = distribute_crew(crew_apps.sequential_crew, name="seq")
    pool = Pool.local(crew, workers=1)
    crew.pool = pool
    try:
        output = finished(crew.kickoff(inputs=INPUTS))
    finally:
        pool.close()

    assert output.model_dump() == expected.model_dump()


def test_sync_kickoff_for_each_equals_the_plain_crews_and_raises_the_first_failure() -> None:
    inputs = [{"topic": t} for t in ("tides", "winds", "swell")]
    expected = [finished(e) for e in crew_apps.sequential_crew().kickoff_for_each(inputs=inputs)]
    # Plain kickoff_for_each's copies share their LLMs, so its token usage is a running total
    # (5, 10, 15 requests); each distributed run reports its own, as one plain kickoff does.
    own_usage = [
        finished(crew_apps.sequential_crew().kickoff(inputs=i)).token_usage for i in inputs
    ]
    crew = distribute_crew(crew_apps.sequential_crew, name="seq")
    pool = Pool.local(crew, workers=1)
    crew.pool = pool
    try:
        outputs = crew.kickoff_for_each(inputs)
        crew_fakes.FAILING_WORDS.add("winds")
        with pytest.raises(RuntimeError, match="is down") as raised:
            crew.kickoff_for_each(inputs)
    finally:
        pool.close()

    assert [o.model_dump(exclude={"token_usage"}) for o in outputs] == [
        e.model_dump(exclude={"token_usage"}) for e in expected
    ]
    assert [o.token_usage for o in outputs] == own_usage
    assert any("input 1" in note for note in raised.value.__notes__)


async def test_inputs_reach_worker_prompts_so_different_inputs_give_different_outputs(
    pool: Pool,
) -> None:
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(crew)

    tides = finished(await crew.kickoff_async(inputs={"topic": "tides"}))
    winds = finished(await crew.kickoff_async(inputs={"topic": "winds"}))

    assert tides.raw != winds.raw
    assert winds.tasks_output[0].description == "Research winds"


async def test_for_each_runs_each_input_as_its_own_workflow_with_bounded_in_flight(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREW_TEST_LATENCY", "0.05")
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(crew)
    topics = [f"topic {n}" for n in range(6)]

    outputs = await crew.kickoff_for_each_async(
        [{"topic": t} for t in topics], run_ids=[f"each-{n}" for n in range(6)], max_concurrency=2
    )

    assert all(isinstance(o, CrewOutput) for o in outputs), outputs
    done = [o for o in outputs if isinstance(o, CrewOutput)]
    assert [o.tasks_output[0].description for o in done] == [f"Research {t}" for t in topics]
    spans: dict[str, list[float]] = {}
    for call in crew_fakes.CALLS:
        spans.setdefault(call["workflow_id"], []).append(call["started"])
    assert sorted(spans) == [f"each-{n}" for n in range(6)]
    edges = sorted((t, step) for s in spans.values() for t, step in ((min(s), 1), (max(s), -1)))
    in_flight = [sum(step for _, step in edges[: i + 1]) for i in range(len(edges))]
    assert max(in_flight) <= 2
