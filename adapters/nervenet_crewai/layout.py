"""Names for the parts of a crew, so coordinator and worker can point at "the same" agent or LLM.

Both sides build the crew from the same factory, so the *place* of a part is a name both agree
on: ``agents.1``, ``manager_agent``, ``tasks.3.agent``; ``agents.0.llm``, ``manager_llm``. Several
places can hold one object (agents sharing an LLM); such an object is named by its first place in
:func:`llm_places` order, which both sides walk identically.
"""

from __future__ import annotations

from typing import Any

from crewai import Crew, Process, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.llms.base_llm import BaseLLM

from nervenet.errors import ConfigurationError

from .wire import USAGE_FIELDS, Usage


def task_index(crew: Crew, task: Task) -> int:
    """Position of ``task`` in the crew (by identity: equal-looking tasks are distinct)."""
    for index, candidate in enumerate(crew.tasks):
        if candidate is task:
            return index
    raise ConfigurationError(
        f"task {task.name or task.description[:60]!r} is not one of the crew's tasks; a "
        "distributed crew can only run its own tasks"
    )


def agent_place(crew: Crew, agent: BaseAgent) -> str:
    for index, candidate in enumerate(crew.agents):
        if candidate is agent:
            return f"agents.{index}"
    if crew.manager_agent is agent:
        return "manager_agent"
    for index, task in enumerate(crew.tasks):
        if task.agent is agent:
            return f"tasks.{index}.agent"
    raise ConfigurationError(f"agent {agent.role!r} is not part of the crew")


def agents_by_place(crew: Crew) -> dict[str, BaseAgent]:
    """Every agent that can execute a task: crew agents, the manager, agents only on tasks."""
    found: dict[str, BaseAgent] = {}
    seen: set[int] = set()
    for index, agent in enumerate(crew.agents):
        found[f"agents.{index}"] = agent
        seen.add(id(agent))
    if crew.manager_agent is not None and id(crew.manager_agent) not in seen:
        found["manager_agent"] = crew.manager_agent
        seen.add(id(crew.manager_agent))
    for index, task in enumerate(crew.tasks):
        if task.agent is not None and id(task.agent) not in seen:
            found[f"tasks.{index}.agent"] = task.agent
            seen.add(id(task.agent))
    return found


def resolve_agent(crew: Crew, place: str) -> BaseAgent:
    agent = agents_by_place(crew).get(place)
    if agent is None:
        raise ConfigurationError(
            f"the crew built on this worker has no agent at {place!r}; coordinator and workers "
            "must run the same code"
        )
    return agent


def is_hierarchical(crew: Crew) -> bool:
    return bool(crew.process == Process.hierarchical)


def llm_places(crew: Crew) -> list[tuple[str, BaseLLM]]:
    """Every place that holds an LLM object, in a fixed order."""
    places: list[tuple[str, Any]] = []
    for place, agent in agents_by_place(crew).items():
        places.append((f"{place}.llm", agent.llm))
        places.append((f"{place}.function_calling_llm", _field(agent, "function_calling_llm")))
    for name in ("manager_llm", "function_calling_llm", "planning_llm"):
        places.append((name, _field(crew, name)))
    return [(place, llm) for place, llm in places if isinstance(llm, BaseLLM)]


def distinct_llms(crew: Crew) -> dict[str, BaseLLM]:
    """Each LLM object once, named by its first place."""
    named: dict[str, BaseLLM] = {}
    seen: set[int] = set()
    for place, llm in llm_places(crew):
        if id(llm) not in seen:
            seen.add(id(llm))
            named[place] = llm
    return named


def set_llm(crew: Crew, place: str, llm: BaseLLM) -> None:
    owner_place, _, attribute = place.rpartition(".")
    owner: Any = crew if not owner_place else _owner(crew, owner_place)
    # Assign into the model's field storage: going through the attribute would fire CrewAI's
    # deprecation warning for function_calling_llm on every run.
    owner.__dict__[attribute] = llm


def _owner(crew: Crew, place: str) -> Any:
    agents = agents_by_place(crew)
    if place in agents:
        return agents[place]
    raise ConfigurationError(f"no agent at {place!r}")


def _field(model: Any, name: str) -> Any:
    """A pydantic field's value without triggering its deprecation warning."""
    return model.__dict__.get(name)


# --- token usage ----------------------------------------------------------------------------
def usage_of(llm: BaseLLM) -> Usage:
    summary = llm.get_token_usage_summary()
    return {name: int(getattr(summary, name)) for name in USAGE_FIELDS}


def snapshot(llms: dict[str, BaseLLM]) -> dict[str, Usage]:
    return {place: usage_of(llm) for place, llm in llms.items()}


def spent_since(before: dict[str, Usage], llms: dict[str, BaseLLM]) -> dict[str, Usage]:
    """Per LLM, what was spent since ``before`` (LLMs that spent nothing are left out)."""
    spent: dict[str, Usage] = {}
    for place, llm in llms.items():
        delta = _minus(usage_of(llm), before.get(place, {}))
        if delta:
            spent[place] = delta
    return spent


def _minus(after: Usage, before: Usage) -> Usage:
    return {
        name: after.get(name, 0) - before.get(name, 0)
        for name in USAGE_FIELDS
        if after.get(name, 0) != before.get(name, 0)
    }
