"""A pool with ``max_runs`` runs at most that many crew kickoffs of this process at once, as it
does root graph runs: the others wait their turn in the order they came, holding no crew. A
streaming kickoff holds its slot while its chunks are read; crews kicked off inside a flow's
methods run in the flow run's slot. On every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("crewai")

import crew_apps
import crew_fakes
import flow_apps
from bounded_runs import Occupancy, all_slots_given_back
from crew_fakes import ScriptedLLM, finished, streamed
from crewai import Agent, Crew, Task
from nervenet_crewai import DistributedCrew, current_task, distribute_crew, distribute_flow
from nervenet_crewai.testing import FakeCall

from nervenet import Pool

pytestmark = pytest.mark.crewai

#: Kickoffs whose agent is at work right now, counted on the (in-process) worker.
OCCUPANCY = Occupancy()


def count(call: FakeCall) -> None:
    task = current_task()
    if task is None:  # a plain crew's call, in this process
        return
    if call.phase == "begin":
        OCCUPANCY.enter(task.workflow_id)
    else:
        OCCUPANCY.leave()


def one_agent_crew() -> Crew:
    """One agent, one task, one model call of 0.2 s: the kickoff's run is that call."""
    llm = ScriptedLLM(model="clerk", latency=0.2, observers=[crew_fakes.record, count])
    clerk = Agent(role="Clerk", goal="g", backstory="b", llm=llm)
    return Crew(
        agents=[clerk],
        tasks=[Task(description="File {topic}", expected_output="x", agent=clerk)],
    )


@pytest.fixture(autouse=True)
def fresh_occupancy() -> Any:
    global OCCUPANCY
    OCCUPANCY = Occupancy()
    flow_apps.CREWS.clear()
    yield
    flow_apps.CREWS.clear()


async def plain_answers(*topics: str) -> list[str]:
    """Plain CrewAI's answers (its prompts hashed: equal answers mean equal prompts)."""
    return [finished(await one_agent_crew().kickoff_async(inputs={"topic": t})).raw for t in topics]


async def bounded_crew(pool: Pool, max_runs: int) -> DistributedCrew:
    """The one-agent crew on ``pool``, served here, its process bounded to ``max_runs``."""
    pool.bound_runs(max_runs)
    crew = distribute_crew(one_agent_crew, pool=pool, name="bounded")
    await pool.serve(crew)
    return crew


@pytest.mark.parametrize("method", ["kickoff_async", "akickoff"])
async def test_kickoffs_past_the_bound_wait_and_start_in_the_order_they_came(
    pool: Pool, method: str
) -> None:
    crew = await bounded_crew(pool, 2)
    kickoff = getattr(crew, method)  # on a thread of the crew's, or CrewAI's native async
    runs = [f"k{i}" for i in range(6)]

    outputs = await asyncio.wait_for(
        asyncio.gather(*(kickoff(inputs={"topic": r}, run_id=r) for r in runs)), 60
    )

    assert [finished(o).raw for o in outputs] == await plain_answers(*runs)
    assert OCCUPANCY.most == 2
    assert OCCUPANCY.waves(2) == [runs[0:2], runs[2:4], runs[4:6]]
    await all_slots_given_back(pool)


async def test_synchronous_kickoffs_wait_for_a_slot_in_their_threads(pool: Pool) -> None:
    crew = await bounded_crew(pool, 1)

    def kickoff(i: int) -> str:
        return finished(crew.kickoff(inputs={"topic": f"t{i}"}, run_id=f"t{i}")).raw

    answers = await asyncio.wait_for(
        asyncio.gather(*(asyncio.to_thread(kickoff, i) for i in range(3))), 60
    )

    assert answers == await plain_answers("t0", "t1", "t2")
    assert OCCUPANCY.most == 1
    assert sorted(OCCUPANCY.order) == ["t0", "t1", "t2"]


async def test_a_streaming_kickoff_holds_its_slot_while_its_chunks_are_read(pool: Pool) -> None:
    crew = await bounded_crew(pool, 1)
    streams = distribute_crew(crew_apps.streaming_crew, pool=pool, name="streams")
    await pool.serve(streams)

    stream = streamed(await streams.kickoff_async(inputs={"topic": "tides"}))
    chunks = aiter(stream)
    first = await anext(chunks)
    later = asyncio.ensure_future(crew.kickoff_async(inputs={"topic": "later"}, run_id="later"))
    await asyncio.sleep(0.5)  # the stream is half read: the later kickoff must not start

    assert (pool.run_slots.running, pool.run_slots.waiting) == (1, 1)
    assert OCCUPANCY.order == []
    rest = [chunk async for chunk in chunks]
    output = await asyncio.wait_for(later, 30)

    assert len([first, *rest]) > 9
    assert stream.result.raw
    assert [finished(output).raw] == await plain_answers("later")
    await all_slots_given_back(pool)


async def test_a_stream_closed_early_gives_its_slot_back(pool: Pool) -> None:
    crew = await bounded_crew(pool, 1)
    streams = distribute_crew(crew_apps.streaming_crew, pool=pool, name="streams")
    await pool.serve(streams)

    stream = streamed(await streams.kickoff_async(inputs={"topic": "tides"}))
    async for _ in stream:
        break  # a client that went away after the first chunk
    await stream.aclose()
    never_read = streamed(await streams.kickoff_async(inputs={"topic": "winds"}))
    await never_read.aclose()  # closed before its first chunk: it never took a slot

    output = await asyncio.wait_for(crew.kickoff_async(inputs={"topic": "next"}), 30)
    assert [finished(output).raw] == await plain_answers("next")
    await all_slots_given_back(pool)


async def test_crews_kicked_off_inside_a_flows_methods_run_in_the_flow_runs_slot(
    pool: Pool,
) -> None:
    """With one slot, held by the flow run, a crew its method kicks off (also from synchronous
    code, through the pool's loop: ``kickoff_for_each``) must not wait for a second one: it
    would wait forever."""
    crew_output = await flow_apps.CrewFlow().kickoff_async()
    for_each_output = await flow_apps.ForEachFlow().kickoff_async()
    pool.bound_runs(1)
    flow_apps.CREWS["seq"] = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(flow_apps.CREWS["seq"])
    crew_flow = distribute_flow(flow_apps.CrewFlow, pool=pool, name="crewflow")
    for_each_flow = distribute_flow(flow_apps.ForEachFlow, pool=pool, name="survey")

    outputs = await asyncio.wait_for(
        asyncio.gather(
            crew_flow.kickoff_async(run_id="cf-1"), for_each_flow.kickoff_async(run_id="fe-1")
        ),
        60,
    )

    assert list(outputs) == [crew_output, for_each_output]
    assert {c["workflow_id"] for c in crew_fakes.calls() if c["task_id"]} == {
        "cf-1/research.0/seq.0",
        "cf-1/follow_up.0/seq.0",
        "fe-1/survey.0/seq.0",
        "fe-1/survey.0/seq.1",
    }
    await all_slots_given_back(pool)
