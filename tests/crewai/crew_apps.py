"""Crew factories used by the tests, importable by worker subprocesses (``crew_apps:name``).

Each module-level ``DistributedCrew`` has no pool: worker processes only need its handlers, and
tests make their own with a pool (``distribute_crew(factory, pool=..., name=...)``).

No ``from __future__ import annotations`` here: CrewAI checks a guardrail's return annotation at
runtime and rejects it as a string (see ``must_be_verified``).
"""

import os
from typing import Any

from crew_fakes import ScriptedLLM, where
from crewai import Agent, Crew, Process, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.lite_agent_output import LiteAgentOutput
from crewai.project import CrewBase, agent, crew, task
from crewai.tasks.task_output import TaskOutput
from crewai.tools import tool
from nervenet_crewai import distribute_crew
from nervenet_crewai.testing import research_crew
from pydantic import BaseModel

TOOL_RUNS: list[dict[str, Any]] = []
"""Where the tool ran: process and thread."""


def _latency() -> float:
    return float(os.environ.get("CREW_TEST_LATENCY", "0"))


def sequential_crew() -> Crew:
    """Three agents, three tasks; the second reads the first, the third reads both. The first
    two share one LLM (CrewAI counts a shared LLM's tokens once per agent)."""
    llm = ScriptedLLM(model="seq", latency=_latency())
    return research_crew([llm, llm, ScriptedLLM(model="w")])


def parallel_crew() -> Crew:
    """Two ``async_execution`` tasks (1 s model latency each) and a task joining them."""
    slow = ScriptedLLM(model="slow", latency=float(os.environ.get("CREW_TEST_LATENCY", "1.0")))
    one = Agent(role="North desk", goal="g", backstory="b", llm=slow)
    two = Agent(role="South desk", goal="g", backstory="b", llm=slow)
    editor = Agent(role="Editor", goal="g", backstory="b", llm=ScriptedLLM(model="editor"))
    north = Task(description="North news", expected_output="x", agent=one, async_execution=True)
    south = Task(description="South news", expected_output="x", agent=two, async_execution=True)
    join = Task(description="Merge", expected_output="x", agent=editor, context=[north, south])
    return Crew(agents=[one, two, editor], tasks=[north, south, join])


def hierarchical_crew() -> Crew:
    """A manager LLM that delegates the one task to the Researcher."""
    manager = ScriptedLLM(
        model="manager",
        tool="delegate_work_to_coworker",
        tool_input={"task": "Find tide times", "context": "for Brest", "coworker": "Researcher"},
    )
    researcher = Agent(role="Researcher", goal="g", backstory="b", llm=ScriptedLLM(model="res"))
    writer = Agent(role="Writer", goal="g", backstory="b", llm=ScriptedLLM(model="wri"))
    task = Task(description="Report tides for {port}", expected_output="times")
    return Crew(
        agents=[researcher, writer], tasks=[task], process=Process.hierarchical, manager_llm=manager
    )


@tool("port lookup")
def port_lookup(port: str) -> str:
    """Look up a port's code."""
    TOOL_RUNS.append(where())
    return f"code of {port} is {port[:3].upper()}-42"


def tool_crew() -> Crew:
    llm = ScriptedLLM(model="tooler", tool="port_lookup", tool_input={"port": "Brest"})
    clerk = Agent(role="Clerk", goal="g", backstory="b", llm=llm, tools=[port_lookup])
    task = Task(description="Find the code of Brest", expected_output="a code", agent=clerk)
    return Crew(agents=[clerk], tasks=[task])


class Shipment(BaseModel):
    id: str
    status: str
    delayed: bool


GUARDRAIL_CALLS: list[str] = []


def must_be_verified(output: TaskOutput | LiteAgentOutput) -> tuple[bool, Any]:
    # CrewAI reads this return annotation at runtime: it must be the tuple, not a string.
    GUARDRAIL_CALLS.append(output.raw)
    if "verified" not in output.raw:
        return False, "The answer must say it is verified"
    return True, output.raw


def structured_crew() -> Crew:
    """An ``output_pydantic`` task, then a task whose guardrail rejects once."""
    parser = Agent(
        role="Parser",
        goal="g",
        backstory="b",
        llm=ScriptedLLM(
            model="parser", answer='{"id": "S1", "status": "in transit", "delayed": true}'
        ),
    )
    checker = Agent(role="Checker", goal="g", backstory="b", llm=ScriptedLLM(model="checker"))
    parse = Task(
        description="Parse {update}",
        expected_output="a shipment",
        agent=parser,
        output_pydantic=Shipment,
    )
    check = Task(
        description="Check the shipment",
        expected_output="a verdict",
        agent=checker,
        context=[parse],
        guardrail=must_be_verified,
    )
    return Crew(agents=[parser, checker], tasks=[parse, check])


def converting_crew() -> Crew:
    """An ``output_pydantic`` task whose agent answers in prose: CrewAI converts it with an LLM
    call of its own (on the coordinator, so through a RemoteLLM)."""
    llm = ScriptedLLM(
        model="prose",
        answer="Shipment S2 is on time",
        converts_to='{"id": "S2", "status": "on time", "delayed": false}',
    )
    clerk = Agent(role="Clerk", goal="g", backstory="b", llm=llm)
    task = Task(
        description="Report on S2",
        expected_output="a status",
        agent=clerk,
        output_pydantic=Shipment,
    )
    return Crew(agents=[clerk], tasks=[task])


def judged_crew() -> Crew:
    """A string guardrail: CrewAI asks the agent's LLM to judge the answer."""
    llm = ScriptedLLM(model="judged", verdict='{"valid": true, "feedback": null}')
    clerk = Agent(role="Clerk", goal="g", backstory="b", llm=llm)
    task = Task(
        description="Name the port of {port}",
        expected_output="a port",
        agent=clerk,
        guardrail="The answer must name a port",
    )
    return Crew(agents=[clerk], tasks=[task])


def failing_crew() -> Crew:
    broken = Agent(
        role="Broken",
        goal="g",
        backstory="b",
        llm=ScriptedLLM(model="down", fail=True),
        max_retry_limit=0,
    )
    return Crew(agents=[broken], tasks=[Task(description="Try", expected_output="x", agent=broken)])


def streaming_crew() -> Crew:
    """The sequential crew with ``stream=True``: its models stream their answers in chunks."""
    made = sequential_crew()
    made.stream = True
    return made


def down_crew() -> Crew:
    """An agent whose model is down, with CrewAI's default ``max_retry_limit`` (2)."""
    broken = Agent(role="Broken", goal="g", backstory="b", llm=ScriptedLLM(model="down", fail=True))
    return Crew(agents=[broken], tasks=[Task(description="Try", expected_output="x", agent=broken)])


sequential = distribute_crew(sequential_crew, name="seq")
parallel = distribute_crew(parallel_crew, name="par")


@CrewBase
class FilingDesk:
    """A ``@CrewBase`` crew (its ``@agent`` methods memoize: one instance, one set of agents)."""

    # Set by CrewBase on each instance (from the ``@agent`` and ``@task`` methods).
    agents: list[BaseAgent]
    tasks: list[Task]

    @agent
    def clerk(self) -> Agent:
        return Agent(role="Clerk", goal="g", backstory="b", llm=ScriptedLLM(model="desk"))

    @task
    def file_it(self) -> Task:
        # CrewAI types the decorated method's __get__ as `Self | bound method`, so mypy
        # checks the call against the unbound wrapper too (which wants `self`).
        clerk = self.clerk()  # type: ignore[call-arg]
        return Task(description="File {doc}", expected_output="a receipt", agent=clerk)

    @crew
    def crew(self) -> Crew:
        return Crew(agents=self.agents, tasks=self.tasks)


FACTORY_INPUTS: list[Any] = []


def crew_for_inputs(inputs: dict[str, Any] | None) -> Crew:
    """A factory that shapes the crew from the inputs (one task per listed port)."""
    FACTORY_INPUTS.append(inputs)
    clerk = Agent(role="Clerk", goal="g", backstory="b", llm=ScriptedLLM(model="ports"))
    ports = (inputs or {}).get("ports", ["Brest"])
    tasks = [Task(description=f"Tides at {p}", expected_output="x", agent=clerk) for p in ports]
    return Crew(agents=[clerk], tasks=tasks)


def other_crew() -> Crew:
    """Not ``sequential_crew``: what a worker running other code would build."""
    clerk = Agent(role="Someone else", goal="g", backstory="b", llm=ScriptedLLM(model="other"))
    return Crew(agents=[clerk], tasks=[Task(description="Other", expected_output="x", agent=clerk)])
