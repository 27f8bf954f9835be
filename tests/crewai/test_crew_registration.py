"""Registering a crew: factories of every shape, and clear errors for what cannot work."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("crewai")

import crew_apps
import crew_fakes
from crew_fakes import ScriptedLLM, finished
from crewai import Agent, Crew, Task
from nervenet_crewai import distribute_crew
from nervenet_crewai.locks import QueuedFileLocks, install, lock_path

from nervenet import Backoff, Pool, RemoteTaskError
from nervenet.errors import ConfigurationError

pytestmark = pytest.mark.crewai


async def test_a_crewbase_class_gets_a_fresh_instance_and_agents_per_build(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.FilingDesk, pool=pool, name="desk")
    await pool.serve(crew)
    expected = await asyncio.to_thread(
        lambda: finished(crew_apps.FilingDesk().crew().kickoff(inputs={"doc": "bill"}))
    )

    first = crew.run({"doc": "bill"})
    second = crew.run({"doc": "bill"})
    output = finished(await crew.kickoff_async(inputs={"doc": "bill"}))

    assert first.crew.agents[0] is not second.crew.agents[0]
    assert output.model_dump() == expected.model_dump()


async def test_a_factory_taking_inputs_gets_them_on_coordinator_and_workers(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.crew_for_inputs, pool=pool, name="ports")
    await pool.serve(crew)
    crew_apps.FACTORY_INPUTS.clear()

    output = finished(await crew.kickoff_async(inputs={"ports": ["Brest", "Cork"]}))

    assert [t.description for t in output.tasks_output] == ["Tides at Brest", "Tides at Cork"]
    # One build for the kickoff, one per task on the worker, all from the same inputs.
    assert crew_apps.FACTORY_INPUTS == [{"ports": ["Brest", "Cork"]}] * 3


async def test_a_worker_running_other_code_refuses_instead_of_running_another_crew(
    pool: Pool,
) -> None:
    coordinator = distribute_crew(
        crew_apps.sequential_crew, pool=pool, name="skew", retries=0, backoff=Backoff(0.01)
    )
    await pool.serve(distribute_crew(crew_apps.other_crew, name="skew"))

    with pytest.raises(RemoteTaskError, match="deploy the same code"):
        await coordinator.kickoff_async(inputs={"topic": "tides"})
    assert crew_fakes.calls() == []


async def test_inputs_that_are_not_json_are_refused_before_anything_is_sent(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")

    with pytest.raises(ConfigurationError, match="JSON values"):
        await crew.kickoff_async(inputs={"topic": object()})


@pytest.mark.parametrize("option", ["planning", "human_input"])
def test_planning_and_human_input_crews_are_refused_with_the_reason(option: str) -> None:
    def make() -> Crew:
        made = crew_apps.sequential_crew()
        setattr(made.tasks[1] if option == "human_input" else made, option, True)
        return made

    crew = distribute_crew(make, pool=Pool.local(), name="refused")

    with pytest.raises(ConfigurationError, match=f"{option}=True"):
        crew.run({"topic": "tides"})


def test_kicking_off_without_a_pool_says_how_to_fix_it() -> None:
    crew = distribute_crew(crew_apps.sequential_crew, name="nopool")

    with pytest.raises(ConfigurationError, match=r"pool=Pool\.from_url"):
        crew.kickoff(inputs={"topic": "tides"})


async def test_each_run_keeps_its_own_replay_log(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(crew)
    runs = [crew.run({"topic": topic}) for topic in ("tides", "winds")]

    await asyncio.gather(*(run.akickoff() for run in runs))

    for run, topic in zip(runs, ("tides", "winds"), strict=True):
        log = run.crew._task_output_handler.load()
        assert log is not None
        assert [entry["task_index"] for entry in log] == [0, 1, 2]
        assert {entry["inputs"]["topic"] for entry in log} == {topic}


def test_queued_locks_use_crewais_lock_files_and_exclude_each_other() -> None:
    locks = QueuedFileLocks()
    inside: list[int] = []
    overlaps: list[int] = []

    def hold(n: int) -> None:
        with locks("nervenet-test-lock", timeout=10):
            inside.append(n)
            if len(inside) > 1:
                overlaps.append(n)
            inside.remove(n)

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert overlaps == []
    assert lock_path("sqlite:/x").endswith(".lock") and "crewai:" in lock_path("sqlite:/x")
    assert install() is False  # already installed by the crews above: installed once


def test_agents_in_a_distributed_run_never_build_an_executor_on_the_coordinator() -> None:
    llm = ScriptedLLM(model="m")
    agent = Agent(role="r", goal="g", backstory="b", llm=llm)

    def make() -> Crew:
        return Crew(agents=[agent], tasks=[Task(description="d", expected_output="e", agent=agent)])

    distribute_crew(make, pool=Pool.local(), name="noexec").run()
    agent.create_agent_executor()

    assert agent.agent_executor is None
