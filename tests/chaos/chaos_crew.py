"""The crew the chaos run kicks off (intake -> triage -> reply, a deterministic fake model), and
the flow it runs (the crew, then a router: urgent or routine).

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

import hashlib  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402
from crewai import Agent, Crew, Task  # noqa: E402
from crewai.flow.flow import Flow, listen, router, start  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from nervenet_crewai import (  # noqa: E402
    DistributedCrew,
    DistributedFlow,
    current_task,
    distribute_crew,
    distribute_flow,
)
from pydantic import BaseModel  # noqa: E402

from nervenet import Pool  # noqa: E402

NAME = "chaos-crew"
TASK_COUNT = 3


def _text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    return "\n".join(str(m.get("content", "")) for m in messages)


class EchoLLM(BaseLLM):
    """Answers at once with a hash of the prompt, after ``latency`` seconds."""

    latency: float = 0.0
    """Seconds each call sleeps, so kickoffs are in flight when the schedule strikes."""

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        text = _text(messages)
        time.sleep(self.latency)
        task = current_task()
        if task is not None:  # on a worker (a clean run in the test process is not counted)
            client = redis.Redis.from_url(os.environ["NERVENET_REDIS_URL"])
            try:
                client.incr(f"chaos:crew-executions:{task.workflow_id}:{self.model}")
            finally:
                client.close()
        digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        answer = f"{self.model}:{digest}"
        self._track_token_usage_internal(
            {
                "prompt_tokens": len(text) // 4,
                "completion_tokens": len(answer) // 4,
                "total_tokens": (len(text) + len(answer)) // 4,
            }
        )
        return f"Thought: I now know the final answer\nFinal Answer: {answer}"

    def supports_function_calling(self) -> bool:
        return False

    def get_input_tokens_count(self, *args: Any, **kwargs: Any) -> int:
        return 0


def support_crew() -> Crew:
    latency = float(os.environ.get("CHAOS_CREW_SECONDS", "0"))
    intake = Agent(
        role="Intake",
        goal="Restate ticket {ticket} precisely",
        backstory="Reads every ticket first.",
        llm=EchoLLM(model="intake", latency=latency),
    )
    triage = Agent(
        role="Triage",
        goal="Decide how urgent a ticket is",
        backstory="Knows what can wait.",
        llm=EchoLLM(model="triage", latency=latency),
    )
    writer = Agent(
        role="Writer",
        goal="Answer customers plainly",
        backstory="Short, calm replies.",
        llm=EchoLLM(model="writer", latency=latency),
    )
    restate = Task(
        description="Restate ticket {ticket}: {text}", expected_output="one line", agent=intake
    )
    rate = Task(
        description="Rate the urgency of ticket {ticket}",
        expected_output="low, normal or high, and why",
        agent=triage,
        context=[restate],
    )
    reply = Task(
        description="Write the reply to ticket {ticket}",
        expected_output="two sentences",
        agent=writer,
        context=[restate, rate],
    )
    return Crew(agents=[intake, triage, writer], tasks=[restate, rate, reply])


def kickoff_inputs(k: int) -> dict[str, str]:
    return {"ticket": f"T-{k:04d}", "text": f"order {k} arrived {'late' if k % 3 else 'damaged'}"}


def run_id(k: int) -> str:
    return f"crew-{k}"


def distribute(pool: Pool | None = None) -> DistributedCrew:
    return distribute_crew(support_crew, pool=pool, name=NAME, wait_for_worker=True)


def clean_output(k: int) -> str:
    """What a plain CrewAI kickoff (no pool, no workers) returns, as JSON."""
    return support_crew().kickoff(inputs=kickoff_inputs(k)).model_dump_json()


class Ticket(BaseModel):
    id: str = ""
    ticket: str = ""
    text: str = ""
    reply: str = ""


DISTRIBUTED: list[DistributedCrew] = []
"""The distributed crew the flow kicks off, once ``distribute_flows`` made it; else plain."""


class SupportFlow(Flow[Ticket]):
    @start()
    def answer(self) -> str:
        inputs = {"ticket": self.state.ticket, "text": self.state.text}
        if DISTRIBUTED:
            output = DISTRIBUTED[0].kickoff(inputs=inputs)
        else:
            output = support_crew().kickoff(inputs=inputs)
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
