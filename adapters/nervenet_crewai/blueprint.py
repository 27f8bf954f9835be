"""The registered crew factory, and how a worker turns it back into a ready crew.

A crew is never sent anywhere: the coordinator and every worker call the same factory. CrewAI
interpolates kickoff inputs into tasks and agents *in place*, so one crew object cannot serve two
kickoffs at once; every kickoff and every worker-side task gets a crew of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from crewai import Crew
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.crews.utils import _resolve_crew_skills

from nervenet.errors import ConfigurationError

from .layout import is_hierarchical
from .wire import CrewRef

CrewFactory = Callable[..., Any]
"""A function returning a ``Crew`` (optionally taking ``inputs``), or a ``@CrewBase`` class."""


class Blueprint:
    """Builds fresh crews from a user's factory."""

    def __init__(self, factory: CrewFactory) -> None:
        if not callable(factory):
            raise ConfigurationError(
                f"{factory!r} is not a crew factory: pass a function returning a Crew or a "
                "@CrewBase class"
            )
        self.factory = factory
        self._takes_inputs = _takes_inputs(factory)

    def build(self, inputs: dict[str, Any] | None) -> Crew:
        made = self.factory(inputs) if self._takes_inputs else self.factory()
        if not isinstance(made, Crew) and callable(getattr(made, "crew", None)):
            made = made.crew()  # an instance of a @CrewBase class
        if not isinstance(made, Crew):
            raise ConfigurationError(
                f"the crew factory returned {type(made).__name__}, not a crewai.Crew"
            )
        return made

    def build_for_worker(self, ref: CrewRef) -> Crew:
        """A crew prepared the way ``Crew.kickoff`` prepares it, minus what stays with the
        coordinator: kickoff events and hooks, ``before_kickoff`` callbacks (``ref.inputs`` are
        their result), task callbacks and planning."""
        crew = self.build(ref.factory_inputs)
        if crew.key != ref.crew_key:
            raise ConfigurationError(
                "the crew factory built a different crew on this worker than on the "
                "coordinator (agent or task definitions differ); deploy the same code to both"
            )
        if ref.inputs is not None:
            crew._inputs = ref.inputs
            crew._interpolate_inputs(ref.inputs)
        crew._set_allow_crewai_trigger_context_for_first_task()
        agents = list(crew.agents)
        for task in crew.tasks:  # by identity: pydantic's == would merge look-alike agents
            if task.agent is not None and all(task.agent is not a for a in agents):
                agents.append(task.agent)
        _setup_agents(crew, agents)
        if is_hierarchical(crew):
            crew._create_manager_agent()
        return crew


def _setup_agents(crew: Crew, agents: list[BaseAgent]) -> None:
    """``crewai.crews.utils.setup_agents`` without building every agent's executor up front.

    A worker runs one agent's task; ``Agent.execute_task`` builds that agent's executor itself
    (and a delegated coworker's, when it is asked). Building all of them, as kickoff does, cost
    about 12 ms of CPU per agent per task, mostly pydantic building a state class per executor.
    """
    function_calling_llm = crew.__dict__.get("function_calling_llm")  # the attribute warns
    skills = _resolve_crew_skills(crew)
    for agent in agents:
        agent.crew = crew
        agent.set_knowledge(crew_embedder=crew.embedder)
        agent.set_skills(resolved_crew_skills=skills)
        if not agent.__dict__.get("function_calling_llm"):
            agent.__dict__["function_calling_llm"] = function_calling_llm
        if not getattr(agent, "step_callback", None):
            agent.step_callback = crew.step_callback  # type: ignore[attr-defined]


def _takes_inputs(factory: CrewFactory) -> bool:
    if inspect.isclass(factory):
        return False
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "inputs" in parameters
