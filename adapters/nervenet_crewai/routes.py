"""Per-agent and per-model routing and limits of a distributed crew.

``distribute_crew(..., agents={"Researcher": {"queue": "gpu", "max_concurrency": 4}},
llms={"gpt-4o": {"limit_key": "openai", "rate_limit": "500/min"}})`` takes the options LangGraph
nodes take (:mod:`nervenet.routing`), for an agent by role and for the LLM calls CrewAI makes on
the coordinator by model name. An agent or model with options gets a task type of its own
(``<name>/task/researcher``, ``<name>/llm/gpt-4o``), served by the same handler as the crew's
others, so that workers can be started for its queue and permits taken for its limit alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nervenet.handlers import validate_task_type
from nervenet.routing import TaskOptions


def _segment(label: str) -> str:
    """A role or model name as a task type segment: lower case, no spaces or braces."""
    return re.sub(r"[^a-z0-9._:-]+", "-", label.strip().lower()).strip("-") or "agent"


class CrewRoutes:
    """Which task type an agent's work or an LLM call of one crew goes to, and its options."""

    def __init__(
        self,
        name: str,
        agents: Mapping[str, Mapping[str, Any]] | None = None,
        llms: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.agent_types = {
            role: validate_task_type(f"{name}/task/{_segment(role)}") for role in agents or {}
        }
        self.llm_types = {
            model: validate_task_type(f"{name}/llm/{_segment(model)}") for model in llms or {}
        }
        self.options: dict[str, TaskOptions] = {}
        for role, spelled in (agents or {}).items():
            task_type = self.agent_types[role]
            self.options[task_type] = TaskOptions.parse(task_type, spelled)
        for model, spelled in (llms or {}).items():
            task_type = self.llm_types[model]
            self.options[task_type] = TaskOptions.parse(task_type, spelled)

    def for_agent(self, role: str) -> str:
        return self.agent_types.get(role, f"{self.name}/task")

    def for_llm(self, model: str) -> str:
        return self.llm_types.get(model, f"{self.name}/llm")

    def queue_of(self, task_type: str) -> str | None:
        options = self.options.get(task_type)
        return options.queue if options is not None else None

    def extra_task_types(self) -> dict[str, str]:
        """Task type of its own -> the crew's base kind it runs as (``task`` or ``llm``)."""
        return {
            **{t: "task" for t in self.agent_types.values()},
            **{t: "llm" for t in self.llm_types.values()},
        }
