"""What runs inside an agent's task — delegation, tools, structured answers — runs on workers,
and CrewAI's handling around it (guardrails, output_pydantic) is unchanged."""

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
from nervenet.errors import ConfigurationError

pytestmark = pytest.mark.crewai


async def plain_kickoff(
    factory: Callable[[], Crew], inputs: dict[str, Any] | None = None
) -> CrewOutput:
    return await asyncio.to_thread(lambda: finished(factory().kickoff(inputs=inputs)))


async def test_hierarchical_manager_delegates_and_both_llms_run_on_workers(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.hierarchical_crew, pool=pool, name="hier")
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.hierarchical_crew, {"port": "Brest"})
    crew_fakes.CALLS.clear()

    output = finished(await crew.kickoff_async(inputs={"port": "Brest"}))

    assert output.model_dump() == expected.model_dump()
    manager, researcher = crew_fakes.calls("manager"), crew_fakes.calls("res")
    assert len(manager) == 2 and len(researcher) == 1  # delegate, then answer; the coworker
    assert all(c["task_id"] for c in manager + researcher)
    # Delegation runs inside the manager's task: one dispatch carries both agents' work.
    assert {c["task_id"] for c in manager + researcher} == {manager[0]["task_id"]}
    assert "tool said" in output.raw
    assert output.token_usage == expected.token_usage


async def test_tool_runs_on_the_worker_inside_the_agents_task(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.tool_crew, pool=pool, name="tools")
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.tool_crew)
    crew_apps.TOOL_RUNS.clear()

    output = finished(await crew.kickoff_async())

    assert output.model_dump() == expected.model_dump()
    assert "BRE-42" in output.raw
    assert len(crew_apps.TOOL_RUNS) == 1 and crew_apps.TOOL_RUNS[0]["task_id"]


async def test_output_pydantic_and_a_guardrail_that_rejects_once(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.structured_crew, pool=pool, name="struct")
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.structured_crew, {"update": "S1 late"})
    crew_apps.GUARDRAIL_CALLS.clear()
    crew_fakes.CALLS.clear()

    output = finished(await crew.kickoff_async(inputs={"update": "S1 late"}))

    assert output.model_dump() == expected.model_dump()
    parsed = output.tasks_output[0].pydantic
    assert isinstance(parsed, crew_apps.Shipment) and parsed.delayed
    # Rejected, retried with the guardrail's feedback on a worker, accepted.
    assert len(crew_apps.GUARDRAIL_CALLS) == 2
    assert "verified" not in crew_apps.GUARDRAIL_CALLS[0]
    assert output.raw.startswith("verified ")
    assert len(crew_fakes.calls("checker")) == 2
    assert all(c["task_id"] for c in crew_fakes.calls())


@pytest.mark.parametrize("kickoff", ["kickoff_async", "akickoff"])
async def test_prose_answer_for_output_pydantic_is_converted_by_an_llm_call_on_a_worker(
    pool: Pool, kickoff: str
) -> None:
    crew = distribute_crew(crew_apps.converting_crew, pool=pool, name="convert")
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.converting_crew)
    crew_fakes.CALLS.clear()

    output = await getattr(crew, kickoff)()

    assert output.model_dump() == expected.model_dump()
    assert output.pydantic == crew_apps.Shipment(id="S2", status="on time", delayed=False)
    agent_call, conversion = crew_fakes.calls("prose")
    assert ":t0." in agent_call["task_id"] and ":llm." in conversion["task_id"]
    assert output.token_usage == expected.token_usage


async def test_string_guardrail_is_judged_by_an_llm_call_on_a_worker(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.judged_crew, pool=pool, name="judged")
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.judged_crew, {"port": "Brest"})
    crew_fakes.CALLS.clear()

    output = finished(await crew.kickoff_async(inputs={"port": "Brest"}))

    assert output.model_dump() == expected.model_dump()
    calls = crew_fakes.calls("judged")
    assert len(calls) == 2 and all(c["task_id"] for c in calls)
    assert ":llm." in calls[1]["task_id"]


async def test_native_akickoff_refuses_string_guardrails_it_would_deadlock_on(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.judged_crew, pool=pool, name="judged")
    await pool.serve(crew)

    with pytest.raises(ConfigurationError, match="use kickoff_async"):
        await crew.akickoff(inputs={"port": "Brest"})
