"""Distributed flows: CrewAI's own engine, outputs and states equal to plain CrewAI's, every run
durable (a killed coordinator's run finished by another, from its last finished method)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

pytest.importorskip("crewai")

import crew_apps
import crew_fakes
import flow_apps
from crew_fakes import finished
from crewai.flow.async_feedback.types import HumanFeedbackPending
from crewai.flow.flow import Flow
from nervenet_crewai import (
    FeedbackAlreadyGiven,
    NotWaitingForFeedback,
    RedisFlowPersistence,
    distribute_crew,
    distribute_flow,
)
from nervenet_crewai.flow_journal import FeedbackClaim, journal_key
from processes import Processes
from pydantic import BaseModel

from nervenet import ConfigurationError, Pool, RunStatus, WorkflowFailed
from nervenet.testing import Child

pytestmark = pytest.mark.crewai


@pytest.fixture(autouse=True)
def plain_crews() -> Any:
    flow_apps.CREWS.clear()
    flow_apps.METHOD_RUNS.clear()
    yield
    flow_apps.CREWS.clear()


async def plain_run(
    flow_class: type[Flow[Any]], inputs: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    flow = flow_class()
    output = await flow.kickoff_async(inputs=inputs)
    return output, flow.state


def without_id(state: Any) -> dict[str, Any]:
    values = state.model_dump() if isinstance(state, BaseModel) else dict(state)
    values.pop("id", None)
    return values


@pytest.mark.parametrize(
    ("flow_class", "inputs"),
    [(flow_apps.LoopFlow, {"topic": "swell"}), (flow_apps.JoinFlow, None)],
    ids=["router-loop-typed-state", "and-or-joins-dict-state"],
)
async def test_output_and_state_equal_plain_crewais(
    pool: Pool, flow_class: type[Flow[Any]], inputs: dict[str, Any] | None
) -> None:
    expected, expected_state = await plain_run(flow_class, inputs)
    plain_methods = list(flow_apps.METHOD_RUNS)
    flow_apps.METHOD_RUNS.clear()
    flows = distribute_flow(flow_class, pool=pool, name="flow")

    run = await flows.asubmit(inputs, run_id="f-1")
    output, state = await run.result(timeout=30), await run.state()

    assert output == expected
    # (CrewAI gives a typed state without an id a subclass of its own per instance.)
    assert isinstance(state, BaseModel) == isinstance(expected_state, BaseModel)
    assert without_id(state) == without_id(expected_state)
    assert plain_methods == flow_apps.METHOD_RUNS


async def test_crews_inside_methods_run_on_workers_and_equal_plain_crewais(pool: Pool) -> None:
    expected, expected_state = await plain_run(flow_apps.CrewFlow)
    plain_calls = len(crew_fakes.calls())
    crew_fakes.CALLS.clear()
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(crew)
    flow_apps.CREWS["seq"] = crew
    flows = distribute_flow(flow_apps.CrewFlow, pool=pool, name="crewflow")

    output = await flows.kickoff_async(run_id="cf-1")

    assert output == expected  # an Article (the method's declared return type), revived
    assert isinstance(output, flow_apps.Article)
    assert without_id(await flows.handle("cf-1").state()) == without_id(expected_state)
    calls = crew_fakes.calls()
    assert len(calls) == plain_calls == 6
    assert all(c["task_id"] for c in calls)  # each one inside a worker's task
    assert {c["workflow_id"] for c in calls} == {"cf-1/research.0/seq.0", "cf-1/follow_up.0/seq.0"}


async def test_kickoff_for_each_inside_a_method_gets_run_ids_derived_from_it(pool: Pool) -> None:
    expected, _ = await plain_run(flow_apps.ForEachFlow)
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(crew)
    flow_apps.CREWS["seq"] = crew
    crew_fakes.CALLS.clear()
    flows = distribute_flow(flow_apps.ForEachFlow, pool=pool, name="survey")

    assert await flows.kickoff_async(run_id="fe-1") == expected
    assert {c["workflow_id"] for c in crew_fakes.calls()} == {
        "fe-1/survey.0/seq.0",
        "fe-1/survey.0/seq.1",
    }


async def test_sync_methods_of_many_runs_block_at_once_beyond_asyncios_few_threads(
    pool: Pool,
) -> None:
    flow_apps.GATHERING.reset()
    flows = distribute_flow(flow_apps.WaitingFlow, pool=pool, name="waiting")

    outputs = await asyncio.gather(*(flows.kickoff_async() for _ in range(12)))

    assert sorted(outputs) == list(range(12))  # all 12 met at the barrier


async def test_queued_flow_runs_and_kickoffs_are_run_by_a_process_taking_queued_runs(
    pool: Pool,
) -> None:
    expected, _ = await plain_run(flow_apps.LoopFlow, {"topic": "swell"})
    expected_kickoff = finished(
        await crew_apps.sequential_crew().kickoff_async(inputs={"topic": "swell"})
    )
    flows = distribute_flow(flow_apps.LoopFlow, pool=pool, name="loop")
    crew = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    await pool.serve(crew)
    pool.workflows.take_queued_runs()  # what `nervenet serve app:flows` does

    run = await flows.asubmit({"topic": "swell"}, run_id="q-1", run_here=False)
    kickoff = await crew.asubmit({"topic": "swell"}, run_id="q-2", run_here=False)

    assert await run.result(timeout=30) == expected
    assert (await kickoff.result(timeout=30)).model_dump() == expected_kickoff.model_dump()
    assert pool.workflows.queued_taken == 2


def test_sync_kickoff_from_plain_code_equals_plain_crewais() -> None:
    expected = flow_apps.LoopFlow().kickoff(inputs={"topic": "reef"})
    pool = Pool.local()
    try:
        flows = distribute_flow(flow_apps.LoopFlow, pool=pool, name="loop")
        assert flows.kickoff(inputs={"topic": "reef"}) == expected
    finally:
        pool.close()


FLOW_COORDINATOR = """
import asyncio, sys
from nervenet_crewai.offline import go_offline
go_offline()
import crew_apps, flow_apps
from nervenet import Pool, PoolSettings
from nervenet_crewai import distribute_crew, distribute_flow
# 3 s leases: a loaded machine stalling this process for a 1 s lease would hand its run over
# while it lives, before the kill this test is about.
STEADY = PoolSettings(heartbeat_interval=0.5, visibility_timeout=3.0, lease_ttl=3.0)

async def main():
    pool = Pool.from_url(sys.argv[1], settings=STEADY)
    flow_apps.CREWS["seq"] = distribute_crew(crew_apps.sequential_crew, pool=pool, name="seq")
    flows = distribute_flow(flow_apps.CrewFlow, pool=pool, name="crewflow")
    run = await flows.asubmit(run_id="doomed-flow")
    await run.result()

asyncio.run(main())
"""


@pytest.mark.redis
async def test_a_killed_coordinators_flow_run_is_finished_by_another_from_its_last_method(
    redis_pool: Pool, processes: Processes, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREW_TEST_LATENCY", "0.3")
    expected, expected_state = await plain_run(flow_apps.CrewFlow)
    plain_calls = len(crew_fakes.calls())
    crew_fakes.CALLS.clear()
    flow_apps.METHOD_RUNS.clear()
    crew = distribute_crew(crew_apps.sequential_crew, pool=redis_pool, name="seq")
    await redis_pool.serve(crew)  # this process serves the agent work, and can take over
    flow_apps.CREWS["seq"] = crew
    flows = distribute_flow(flow_apps.CrewFlow, pool=redis_pool, name="crewflow")

    coordinator = processes.python("-c", FLOW_COORDINATOR, redis_url)
    # The research crew is done and the follow-up crew's first task too: kill mid-method.
    await wait_until(lambda: len(crew_fakes.calls()) == 4, timeout=60)
    coordinator.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    coordinator.wait(timeout=10)
    run = flows.handle("doomed-flow")
    output = await run.result(timeout=60)

    assert output == expected
    assert without_id(await run.state()) == without_id(expected_state)
    assert flow_apps.METHOD_RUNS == ["follow_up"]  # research came from the journal
    assert len(crew_fakes.calls()) == plain_calls  # no finished agent task ran again
    assert redis_pool.workflows.takeovers == 1
    assert time.monotonic() - killed < 10


@pytest.mark.redis
@pytest.mark.parametrize("server", ["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def test_persist_on_redis_is_shared_by_processes_and_restores_as_crewai_does(
    request: pytest.FixtureRequest, server: str
) -> None:
    url = request.getfixturevalue(f"{server}_url")
    persisted_flow = flow_apps.persisted_flow(RedisFlowPersistence(url=url))
    pool = Pool.from_url(url)
    try:
        flows = distribute_flow(persisted_flow, pool=pool, name="persisted")
        run = await flows.asubmit(run_id="p-1")
        assert await run.result(timeout=30) == 11
        state = await run.state()

        stored = RedisFlowPersistence(url=url).load_state(state.id)  # another client
        restored, restored_state = await plain_run(persisted_flow, {"id": state.id})
    finally:
        await pool.aclose()

    assert stored == state.model_dump(mode="json")
    assert (restored, restored_state.rounds) == (22, 22)  # plain CrewAI went on from 11
    assert restored_state.id == state.id


PAUSING_PROCESS = """
import sys
from nervenet_crewai.offline import go_offline
go_offline()
import flow_apps
from nervenet_crewai import RedisFlowPersistence
flow = flow_apps.review_later_flow(RedisFlowPersistence(url=sys.argv[1]))
print("pending", flow().kickoff().context.flow_id, flush=True)
"""


@pytest.mark.redis
def test_a_flow_paused_for_feedback_in_one_process_is_resumed_in_another(
    redis_url: str, crew_env: dict[str, str]
) -> None:
    paused = subprocess.run(
        [sys.executable, "-c", PAUSING_PROCESS, redis_url],
        env=crew_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert paused.returncode == 0, paused.stderr[-3000:]
    flow_id = paused.stdout.split("pending ", 1)[1].split()[0]

    persistence = RedisFlowPersistence(url=redis_url)  # this process's own client
    flow = flow_apps.review_later_flow(persistence).from_pending(flow_id, persistence)

    assert flow.resume("looks good") == "published v1 after 'looks good'"
    assert persistence.load_pending_feedback(flow_id) is None  # CrewAI cleared it


async def test_a_router_naming_no_listener_fails_naming_flow_router_and_label(pool: Pool) -> None:
    flows = distribute_flow(flow_apps.TypoFlow, pool=pool, name="typo")

    with pytest.raises(ConfigurationError, match="flow 'typo': router 'route' returned 'aprove'"):
        await flows.kickoff_async()


async def test_a_result_that_cannot_be_stored_names_the_method_and_keeps_what_finished(
    pool: Pool,
) -> None:
    flows = distribute_flow(flow_apps.OpaqueFlow, pool=pool, name="opaque")

    with pytest.raises(ConfigurationError, match="method 'leak' returned a Opaque"):
        await flows.kickoff_async(run_id="o-1")
    journal = await pool.transport.redis.hgetall("nn:crewai:flow-run:{o-1}")
    assert sorted(journal) == [b"make#0"]


async def test_state_that_json_cannot_hold_fails_naming_flow_and_method(pool: Pool) -> None:
    flows = distribute_flow(flow_apps.SetStateFlow, pool=pool, name="sets")

    with pytest.raises(ConfigurationError, match="flow 'sets': the state after stamp is not JSON"):
        await flows.kickoff_async()


async def test_a_crash_inside_a_method_fails_as_in_plain_crewai_from_any_handle(
    pool: Pool,
) -> None:
    with pytest.raises(ValueError, match="the ledger is locked"):
        await plain_run(flow_apps.CrashFlow)
    flows = distribute_flow(flow_apps.CrashFlow, pool=pool, name="crash")

    with pytest.raises(ValueError, match="the ledger is locked"):
        await flows.kickoff_async(run_id="c-1")
    with pytest.raises(WorkflowFailed, match="ValueError: the ledger is locked"):
        await pool.workflows.wait("c-1")  # what another process's handle sees


def test_what_cannot_be_distributed_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigurationError, match="takes a crewai Flow subclass"):
        distribute_flow(crew_apps.sequential_crew, name="nope")  # type: ignore[arg-type, type-var]
    reads_a_terminal = r"methods \(draft\) have no provider.*input\(\).*PauseForFeedback"
    with pytest.raises(ConfigurationError, match=reads_a_terminal):
        distribute_flow(flow_apps.ReviewFlow, name="review")


# --- human feedback -------------------------------------------------------------------------
FEEDBACKS = ("please revise the intro", "approved, ship it")
"""What the human answers at each pause: the first goes round the loop, the second publishes."""


def pause_of(pending: Any) -> dict[str, Any]:
    """What a paused run shows whoever gives the feedback (no times or trace ids)."""
    assert isinstance(pending, HumanFeedbackPending), pending
    context = pending.context
    return {
        "method": context.method_name,
        "output": context.method_output,
        "message": context.message,
        "emit": context.emit,
        "callback_info": pending.callback_info,
    }


async def plain_review() -> tuple[list[dict[str, Any]], Any, Any]:
    """Plain CrewAI: kickoff pauses; each answer resumes a fresh instance (``from_pending``)."""
    flow: Any = flow_apps.ReviewLoopFlow()
    output = await flow.kickoff_async(inputs={"topic": "swell"})
    pauses = [pause_of(output)]
    for feedback in FEEDBACKS:
        flow = flow_apps.ReviewLoopFlow.from_pending(output.context.flow_id)
        output = await flow.resume_async(feedback)
        if isinstance(output, HumanFeedbackPending):
            pauses.append(pause_of(output))
    return pauses, output, flow.state


async def test_a_paused_run_takes_feedback_once_and_ends_as_plain_crewais(pool: Pool) -> None:
    expected_pauses, expected, expected_state = await plain_review()
    plain_methods = list(flow_apps.METHOD_RUNS)
    flow_apps.METHOD_RUNS.clear()
    flows = distribute_flow(flow_apps.ReviewLoopFlow, pool=pool, name="review")

    run = await flows.asubmit({"topic": "swell"}, run_id="r-1")
    first = await run.result(timeout=30)
    assert (await pool.runs.get("r-1", nodes=False)).status is RunStatus.INTERRUPTED
    waiting = await run.pending_feedback()
    assert waiting is not None and waiting.method_name == "review"
    at_pause = {"topic": "swell", "drafts": 1, "log": ["wrote swell v1"]}
    assert without_id(await run.state()) == at_pause
    second = await flows.resume_async("r-1", FEEDBACKS[0])  # routes to "revise": round again
    # Two answers to the same pause at once: one is taken, the other refused.
    answers = await asyncio.gather(
        run.resume(FEEDBACKS[1]), run.resume(FEEDBACKS[1]), return_exceptions=True
    )
    output, state = await run.result(timeout=30), await run.state()

    assert [pause_of(first), pause_of(second)] == expected_pauses
    assert [type(a).__name__ for a in answers].count("FeedbackAlreadyGiven") == 1
    assert output == expected
    assert without_id(state) == without_id(expected_state)
    assert plain_methods == flow_apps.METHOD_RUNS  # the feedback collapsed once per answer
    assert (await pool.runs.get("r-1", nodes=False)).status is RunStatus.SUCCEEDED
    assert await run.pending_feedback() is None
    with pytest.raises(FeedbackAlreadyGiven, match=r"already given.*finished"):
        await run.resume("approved")


async def test_feedback_for_a_run_that_does_not_wait_is_refused_with_the_reason(
    pool: Pool,
) -> None:
    flows = distribute_flow(flow_apps.ReviewLoopFlow, pool=pool, name="review")
    loops = distribute_flow(flow_apps.LoopFlow, pool=pool, name="loop")
    await loops.kickoff_async(run_id="l-1")

    with pytest.raises(NotWaitingForFeedback, match="'review', run 'nope': no such run"):
        await flows.resume_async("nope", "approved")
    with pytest.raises(NotWaitingForFeedback, match="one of 'loop', not of this flow"):
        await flows.resume_async("l-1", "approved")
    with pytest.raises(NotWaitingForFeedback, match="not waiting for feedback: it is finished"):
        await loops.resume_async("l-1", "approved")
    with pytest.raises(ValueError):  # as CrewAI's resume of a flow that is not paused
        await loops.resume_async("l-1", "approved")


async def test_feedback_can_leave_the_run_to_a_coordinator_process_taking_queued_runs(
    pool: Pool,
) -> None:
    flows = distribute_flow(flow_apps.ReviewLoopFlow, pool=pool, name="review")
    run = await flows.asubmit({"topic": "swell"}, run_id="q-1")
    await run.result(timeout=30)
    pool.workflows.take_queued_runs()

    await run.resume(FEEDBACKS[0], run_here=False)
    second = await run.result(timeout=30)

    assert pause_of(second)["output"] == "swell v2"
    assert pool.workflows.queued_taken == 1


async def test_a_provider_that_answers_at_once_routes_as_in_plain_crewai(pool: Pool) -> None:
    expected, expected_state = await plain_run(flow_apps.AutoReviewFlow, {"topic": "swell"})
    plain_methods = list(flow_apps.METHOD_RUNS)
    flow_apps.METHOD_RUNS.clear()
    flows = distribute_flow(flow_apps.AutoReviewFlow, pool=pool, name="auto")

    run = await flows.asubmit({"topic": "swell"}, run_id="a-1")
    output, state = await run.result(timeout=30), await run.state()

    assert output == expected
    assert without_id(state) == without_id(expected_state)
    assert plain_methods == flow_apps.METHOD_RUNS


def test_sync_kickoff_and_resume_from_plain_code() -> None:
    pool = Pool.local()
    try:
        flows = distribute_flow(flow_apps.ReviewLoopFlow, pool=pool, name="review")
        paused = flows.kickoff(inputs={"topic": "reef"}, run_id="sync-1")
        again = flows.resume("sync-1", FEEDBACKS[0])
        output = flows.resume("sync-1", FEEDBACKS[1])
    finally:
        pool.close()

    assert (pause_of(paused)["output"], pause_of(again)["output"]) == ("reef v1", "reef v2")
    assert output == {"published": "reef v2", "feedback": FEEDBACKS[1]}


async def test_feedback_a_dead_process_stored_but_never_started_is_used_by_the_next(
    pool: Pool,
) -> None:
    flows = distribute_flow(flow_apps.ReviewLoopFlow, pool=pool, name="review")
    run = await flows.asubmit({"topic": "swell"}, run_id="s-1")
    await run.result(timeout=30)
    # A process stored its feedback (one round trip), then died before starting the run.
    stranded = FeedbackClaim(feedback=FEEDBACKS[0], at=time.time() - 60)
    await pool.transport.redis.hset(journal_key("s-1"), "@feedback#1", stranded.model_dump_json())

    with pytest.raises(FeedbackAlreadyGiven, match="stopped before it started the run"):
        await run.resume("approved")
    second = await run.result(timeout=30)

    assert pause_of(second)["output"] == "swell v2"  # the stored "revise" went round again


FEEDBACK_COORDINATOR = """
import asyncio, sys
from nervenet_crewai.offline import go_offline
go_offline()
import flow_apps
from nervenet import Pool, PoolSettings
from nervenet_crewai import distribute_flow

async def main():
    settings = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0)
    pool = Pool.from_url(sys.argv[1], settings=settings)
    flows = distribute_flow(flow_apps.ReviewLoopFlow, pool=pool, name="review")
    if sys.argv[2] == "pause":
        run = await flows.asubmit({"topic": "swell"}, run_id="paused-elsewhere")
        pending = await run.result()
        print("paused", pending.context.method_name, ",".join(flow_apps.METHOD_RUNS), flush=True)
    else:
        await flows.handle("paused-elsewhere").resume(sys.argv[2])
        print("resumed", flush=True)
    await asyncio.sleep(600)  # killed: while its run waits, or while it runs a method

asyncio.run(main())
"""


@pytest.mark.redis
async def test_feedback_from_any_process_resumes_a_run_no_process_took_over_while_it_waited(
    redis_pool: Pool, processes: Processes, redis_url: str
) -> None:
    expected_pauses, expected, expected_state = await plain_review()
    plain_methods = list(flow_apps.METHOD_RUNS)
    flow_apps.METHOD_RUNS.clear()
    flows = distribute_flow(flow_apps.ReviewLoopFlow, pool=redis_pool, name="review")
    run = flows.handle("paused-elsewhere")

    # One process pauses the run and dies: its run is not taken over (it waits, not runs).
    pausing = processes.python("-c", FEEDBACK_COORDINATOR, redis_url, "pause")
    assert await read_line(pausing, "paused") == "paused review write,review"

    async def ended_as_interrupted() -> bool:  # the run's end is written after its result
        return (await redis_pool.runs.get("paused-elsewhere")).status == RunStatus.INTERRUPTED

    await wait_until_async(ended_as_interrupted, timeout=10)
    pausing.send_signal(signal.SIGKILL)
    pausing.wait(timeout=10)
    await asyncio.sleep(3.0)  # three leases: a running run of the dead process is taken over
    assert redis_pool.workflows.takeovers == 0
    assert flow_apps.METHOD_RUNS == []
    assert pause_of(await run.result(timeout=5)) == expected_pauses[0]

    # Another gives the feedback, and dies inside the method the feedback routed to: this
    # process takes the run over, the settled feedback answered from the journal.
    processes.env["FLOW_REWRITE_SECONDS"] = "10"
    resuming = processes.python("-c", FEEDBACK_COORDINATOR, redis_url, FEEDBACKS[0])
    assert await read_line(resuming, "resumed") == "resumed"
    await asyncio.sleep(2.5)  # the feedback is collapsed and journaled; rewrite sleeps 10 s
    resuming.send_signal(signal.SIGKILL)
    resuming.wait(timeout=10)
    second = await run.result(timeout=30)

    assert redis_pool.workflows.takeovers == 1
    assert pause_of(second) == expected_pauses[1]
    assert await flows.resume_async("paused-elsewhere", FEEDBACKS[1]) == expected
    assert without_id(await run.state()) == without_id(expected_state)
    # write, review and the first collapse ran in the two dead processes, once each.
    assert ["write", "review", "collapse", *flow_apps.METHOD_RUNS] == plain_methods


async def read_line(process: Child, marker: str, timeout: float = 60.0) -> str:
    """The first line the process prints starting with ``marker`` (CrewAI prints its panels)."""
    deadline = time.monotonic() + timeout
    while True:
        output = process.output()
        line = next((x for x in output.splitlines() if x.startswith(marker)), None)
        if line is not None:
            return line.strip()
        assert process.running, f"the process ended without printing {marker!r}: {output}"
        assert time.monotonic() < deadline, f"no {marker!r} line within {timeout:g} s"
        await asyncio.sleep(0.05)


async def wait_until_async(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
