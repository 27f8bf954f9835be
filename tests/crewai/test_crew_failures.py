"""Failures: an agent's error fails the kickoff as in plain CrewAI, at the same cost (escalated
only when the crew asks for retries); a dead worker's task is redelivered; a crashed or failed
kickoff resumed with its run id re-runs only the unfinished tasks."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("crewai")

import crew_apps
import crew_fakes
from crew_fakes import finished
from crewai import Crew, CrewOutput
from nervenet_crewai import distribute_crew
from processes import Processes

from nervenet import Backoff, Pool, RemoteTaskError, TaskEscalated

pytestmark = pytest.mark.crewai

INPUTS = {"topic": "tides"}
QUICK = Backoff(initial=0.01, maximum=0.05)


async def plain_kickoff(
    factory: Callable[[], Crew], inputs: dict[str, Any] | None = None
) -> CrewOutput:
    return await asyncio.to_thread(lambda: finished(factory().kickoff(inputs=inputs)))


async def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("factory", [crew_apps.down_crew, crew_apps.failing_crew])
async def test_an_agents_error_fails_as_in_plain_crewai_with_as_many_llm_calls(
    pool: Pool, factory: Callable[[], Crew]
) -> None:
    with pytest.raises(Exception) as plain:
        await plain_kickoff(factory)
    plain_calls = len(crew_fakes.calls("down", phase="failed"))
    crew_fakes.CALLS.clear()
    crew = distribute_crew(factory, pool=pool, name="fail")
    await pool.serve(crew)

    with pytest.raises(Exception) as distributed:
        await crew.kickoff_async(run_id="doomed")

    assert type(distributed.value) is type(plain.value) is RuntimeError
    assert str(distributed.value) == str(plain.value) == "fake model down is down"
    assert len(crew_fakes.calls("down", phase="failed")) == plain_calls  # 3, then 1
    assert any("crew 'fail', run 'doomed': task 0" in n for n in distributed.value.__notes__)
    cause = distributed.value.__cause__
    assert isinstance(cause, RemoteTaskError), cause
    assert "Traceback" in cause.remote_traceback
    assert await pool.escalations.list() == []


async def test_agent_that_keeps_failing_is_escalated_when_retries_are_asked_for(
    pool: Pool,
) -> None:
    crew = distribute_crew(
        crew_apps.failing_crew,
        pool=pool,
        name="fail",
        retries=1,
        retry_errors=True,
        backoff=QUICK,
    )
    await pool.serve(crew)

    with pytest.raises(TaskEscalated) as raised:
        await crew.kickoff_async(run_id="doomed")

    assert "fake model down is down" in str(raised.value)
    assert "nervenet escalations list" in str(raised.value)
    assert any("crew 'fail', run 'doomed': task 0" in note for note in raised.value.__notes__)
    escalated = await pool.escalations.list()
    assert [(e.workflow_id, e.task_type) for e in escalated] == [("doomed", "fail/task")]
    assert len(crew_fakes.calls("down", phase="failed")) == 2  # one per attempt


async def test_one_failing_kickoff_in_a_batch_leaves_the_others_alone(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq", retries=0)
    await pool.serve(crew)
    crew_fakes.FAILING_WORDS.add("maelstrom")  # any prompt about it fails
    inputs = [{"topic": t} for t in ("tides", "maelstrom", "winds", "swell")]

    results = await crew.kickoff_for_each_async(inputs, max_concurrency=2, progress=False)

    assert [type(r).__name__ for r in results] == [
        "CrewOutput",
        "RuntimeError",
        "CrewOutput",
        "CrewOutput",
    ]
    failure = results[1]
    assert isinstance(failure, RuntimeError)
    assert any("input 1" in note for note in failure.__notes__)


async def test_resumed_kickoff_reruns_only_unfinished_tasks(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq", retries=0)
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.sequential_crew, INPUTS)
    crew_fakes.CALLS.clear()
    crew_fakes.FAILING.add("w")  # the third task's model is down

    with pytest.raises(RuntimeError):
        await crew.kickoff_async(inputs=INPUTS, run_id="resume-me")
    assert len(crew_fakes.calls("seq")) == 2
    crew_fakes.FAILING.clear()

    output = finished(await crew.kickoff_async(inputs=INPUTS, run_id="resume-me"))

    assert len(crew_fakes.calls("seq")) == 2  # tasks 1 and 2 came from the result cache
    assert len(crew_fakes.calls("w")) == 1
    assert output.model_dump() == expected.model_dump()


@pytest.mark.redis
async def test_worker_killed_mid_task_its_task_is_redelivered_and_kickoff_completes(
    redis_pool: Pool, redis_url: str, processes: Processes, crew_env: dict[str, str]
) -> None:
    crew_env["CREW_TEST_LATENCY"] = "1.5"
    log = crew_env["CREW_TEST_LOG"]
    for _ in range(2):
        processes.crew_worker(redis_url, "crew_apps:sequential", concurrency=1)
    crew = distribute_crew(crew_apps.sequential_crew, pool=redis_pool, name="seq")
    expected = await plain_kickoff(crew_apps.sequential_crew, INPUTS)

    kickoff = asyncio.ensure_future(crew.kickoff_async(inputs=INPUTS))
    await wait_for(lambda: crew_fakes.read_log(log))
    victim = crew_fakes.read_log(log)[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    output = finished(await asyncio.wait_for(kickoff, 60))

    assert output.model_dump() == expected.model_dump()
    first_task = [c for c in crew_fakes.read_log(log) if c["task_id"].split(":")[2] == "t0.0"]
    assert [c["phase"] for c in first_task] == ["begin", "begin", "end"]
    assert first_task[0]["pid"] == victim != first_task[-1]["pid"]


COORDINATOR = """
import asyncio, sys
from nervenet_crewai.offline import go_offline
go_offline()
import crew_apps
from nervenet import Pool, PoolSettings
from nervenet_crewai import distribute_crew
FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0, block_ms=200)

async def main():
    pool = Pool.from_url(sys.argv[1], settings=FAST)
    crew = distribute_crew(crew_apps.structured_crew, pool=pool, name="desk")
    handle = await crew.asubmit(inputs={"update": "S1 late"}, run_id="crashing")
    await handle.result()

asyncio.run(main())
"""


@pytest.mark.redis
async def test_a_killed_coordinators_durable_kickoff_is_taken_over_without_rerunning_tasks(
    redis_pool: Pool, processes: Processes, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREW_TEST_LATENCY", "0.3")
    expected = await plain_kickoff(crew_apps.structured_crew, {"update": "S1 late"})
    crew_fakes.CALLS.clear()
    crew = distribute_crew(crew_apps.structured_crew, pool=redis_pool, name="desk")
    await redis_pool.serve(crew)  # this process also serves the crew's agent work

    coordinator = processes.python("-c", COORDINATOR, redis_url)
    await wait_for(lambda: len(crew_fakes.calls("parser")) == 1)  # the first task is done
    coordinator.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    coordinator.wait(timeout=10)
    await wait_for(lambda: redis_pool.workflows.takeovers == 1, timeout=10)
    taken_over = time.monotonic() - killed

    output = await crew.handle("crashing").result(timeout=30)

    assert output.model_dump() == expected.model_dump()
    assert isinstance(output.tasks_output[0].pydantic, crew_apps.Shipment)
    assert len(crew_fakes.calls("parser")) == 1  # answered from the result cache
    assert taken_over < 2.5  # lease 1 s, heartbeat 0.2 s


async def test_a_durable_kickoffs_output_is_awaitable_by_run_id_with_models_revived(
    pool: Pool,
) -> None:
    crew = distribute_crew(crew_apps.structured_crew, pool=pool, name="desk")
    await pool.serve(crew)
    expected = await plain_kickoff(crew_apps.structured_crew, {"update": "S1 late"})

    submitted = await crew.asubmit(inputs={"update": "S1 late"}, run_id="order-7")
    output = await crew.handle("order-7").result(timeout=30)

    assert submitted.run_id == "order-7"
    assert output.model_dump() == expected.model_dump()
    assert output.pydantic is None  # the last task has no model; the first one's is revived
    assert output.tasks_output[0].pydantic == crew_apps.Shipment(
        id="S1", status="in transit", delayed=True
    )
    assert (await submitted.result()).model_dump() == expected.model_dump()


async def test_a_failed_durable_kickoff_raises_from_any_handle(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.failing_crew, pool=pool, name="fail")
    await pool.serve(crew)

    submitted = await crew.asubmit(run_id="doomed")

    with pytest.raises(RuntimeError, match="is down"):
        await submitted.result(timeout=30)
