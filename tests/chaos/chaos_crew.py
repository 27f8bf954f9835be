"""The crew the chaos run kicks off (``nervenet_crewai.testing.research_crew`` with a
deterministic fake model per agent), and the flow it runs (the crew, then a router: urgent or
routine).

Each agent's answer is its role plus a hash of its whole prompt, and each prompt carries the
answers before it (task context): the final output of a kickoff equals a clean run's only if
every agent, on whichever worker, saw exactly the prompt a plain CrewAI kickoff builds. The model
counts its calls on workers in Redis (``chaos:crew-executions:<run>:<role>``), so repeated agent
work is reported the way the graph's node re-executions are.
"""

from __future__ import annotations

import os
import tempfile

from nervenet_crewai.offline import go_offline

# CrewAI reads its telemetry switches when it is imported: keep it off the network first.
go_offline(storage_dir=os.environ.get("CREWAI_STORAGE_DIR") or tempfile.mkdtemp(prefix="chaos-"))

from typing import Any  # noqa: E402

from crewai import Crew, CrewOutput  # noqa: E402
from crewai.flow.flow import Flow, listen, router, start  # noqa: E402
from crewai.types.streaming import CrewStreamingOutput  # noqa: E402
from nervenet_crewai import (  # noqa: E402
    DistributedCrew,
    DistributedFlow,
    current_task,
    distribute_crew,
    distribute_flow,
)
from nervenet_crewai.testing import FakeCall, FakeLLM, RedisCallCounter, research_crew  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from nervenet import Pool  # noqa: E402

NAME = "chaos-crew"
TASK_COUNT = 3


def support_crew() -> Crew:
    """The shared three-agent crew, one fake model per agent, each counting its calls on
    workers in Redis."""
    latency = float(os.environ.get("CHAOS_CREW_SECONDS", "0"))
    counter = RedisCallCounter(
        os.environ.get("NERVENET_REDIS_URL", ""),  # set for every worker of the chaos run
        executions_key,
        on_workers_only=True,  # a clean run in the test process is not counted
    )
    return research_crew(
        [
            FakeLLM(model=role, latency=latency, digest_size=6, observers=[counter])
            for role in ("researcher", "analyst", "writer")
        ]
    )


def executions_key(call: FakeCall) -> str | None:
    task = current_task()
    return None if task is None else f"chaos:crew-executions:{task.workflow_id}:{call.model}"


def kickoff_inputs(k: int) -> dict[str, str]:
    ticket, text = f"T-{k:04d}", f"order {k} arrived {'late' if k % 3 else 'damaged'}"
    return {"ticket": ticket, "text": text, "topic": f"ticket {ticket}: {text}"}


def run_id(k: int) -> str:
    return f"crew-{k}"


def distribute(pool: Pool | None = None) -> DistributedCrew:
    return distribute_crew(support_crew, pool=pool, name=NAME, wait_for_worker=True)


def clean_output(k: int) -> str:
    """What a plain CrewAI kickoff (no pool, no workers) returns, as JSON."""
    return finished(support_crew().kickoff(inputs=kickoff_inputs(k))).model_dump_json()


def finished(output: CrewOutput | CrewStreamingOutput) -> CrewOutput:
    """A kickoff's output (the crew does not stream, so it is never a streaming one)."""
    assert isinstance(output, CrewOutput), type(output)
    return output


class Ticket(BaseModel):
    id: str = ""
    ticket: str = ""
    text: str = ""
    topic: str = ""
    reply: str = ""


DISTRIBUTED: list[DistributedCrew] = []
"""The distributed crew the flow kicks off, once ``distribute_flows`` made it; else plain."""


class SupportFlow(Flow[Ticket]):
    @start()
    def answer(self) -> str:
        inputs = {"topic": self.state.topic}
        if DISTRIBUTED:
            output = finished(DISTRIBUTED[0].kickoff(inputs=inputs))
        else:
            output = finished(support_crew().kickoff(inputs=inputs))
        self.state.reply = output.raw
        return output.raw

    @router(answer)
    def triage(self) -> str:
        return "urgent" if "damaged" in self.state.text else "routine"

    @listen("urgent")
    def escalate(self) -> dict[str, str]:
        return {"ticket": self.state.ticket, "reply": self.state.reply, "path": "urgent"}

    @listen("routine")
    def file(self) -> dict[str, str]:
        return {"ticket": self.state.ticket, "reply": self.state.reply, "path": "routine"}


def flow_run_id(k: int) -> str:
    return f"flowrun-{k}"


def distribute_flows(crew: DistributedCrew, pool: Pool | None = None) -> DistributedFlow[Any]:
    DISTRIBUTED[:] = [crew]
    return distribute_flow(SupportFlow, pool=pool, name="chaos-flow")


def clean_flow_output(k: int) -> Any:
    """What a plain CrewAI flow run returns."""
    return SupportFlow().kickoff(inputs=kickoff_inputs(k))


if __name__ == "__main__":
    import json
    import sys

    # ``python chaos_crew.py FIRST COUNT``: clean outputs, one JSON line each, for the test.
    first, count = int(sys.argv[1]), int(sys.argv[2])
    for k in range(first, first + count):
        flow = clean_flow_output(k)
        print(json.dumps({"k": k, "output": clean_output(k), "flow": flow}), flush=True)
