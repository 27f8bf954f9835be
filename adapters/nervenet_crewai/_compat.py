"""The private CrewAI names the adapter relies on, checked when the adapter is imported.

Distributing a crew reproduces parts of ``Crew.kickoff`` (input interpolation, the manager agent,
tool preparation, guardrails, the task-output log) on a coordinator and a worker, through CrewAI
methods and attributes that are not public. A CrewAI release can rename any of them; this module
checks them all at import (``crew.py`` imports it first) and raises :class:`CrewAIVersionError`
naming the tested versions, instead of failing midway through a kickoff.
"""

from __future__ import annotations

import importlib.metadata

from nervenet import ConfigurationError

#: The CrewAI versions this adapter is tested with.
TESTED_CREWAI = ">=1.15.30,<2"

# Methods of Crew called by the adapter, and private (pydantic) attributes it reads or sets.
_CREW_METHODS = (
    "_interpolate_inputs",
    "_set_allow_crewai_trigger_context_for_first_task",
    "_create_manager_agent",
    "_prepare_tools",
)
_CREW_PRIVATE = ("_inputs", "_task_output_handler")
_TASK_PRIVATE = ("_guardrail", "_guardrails")
# Distributed flows (flow.py): the method table they wrap, the definition they read routes
# from, and CrewAI's own state dump and restore they journal with.
_FLOW_METHODS = ("_restore_state", "_copy_and_serialize_state")
_FLOW_PRIVATE = ("_methods", "_definition")


class CrewAIVersionError(ConfigurationError):
    """The installed CrewAI lacks something the adapter relies on."""


def _incompatible(what: str, cause: BaseException | None = None) -> CrewAIVersionError:
    try:
        version = importlib.metadata.version("crewai")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return CrewAIVersionError(
        f"nervenet_crewai does not work with crewai {version}: {what}. Tested with "
        f"crewai{TESTED_CREWAI}; install one of those (pip install 'crewai{TESTED_CREWAI}')"
        + (f" ({type(cause).__name__}: {cause})" if cause else "")
    )


try:
    from crewai import Crew, Task
    from crewai.crews.utils import _resolve_crew_skills
    from crewai.flow.flow import Flow
    from crewai.flow.runtime import _iter_condition_events
    from crewai.tasks.llm_guardrail import LLMGuardrail, LLMGuardrailResult
    from crewai.tools.tool_failure import (
        ToolFailureRecord,
        active_tool_failures,
        tool_failure_collector,
    )
    from crewai.types.streaming import CrewStreamingOutput
except ImportError as exc:  # pragma: no cover - depends on the installed CrewAI
    raise _incompatible("a name it uses is gone", exc) from exc

__all__ = [
    "TESTED_CREWAI",
    "CrewAIVersionError",
    "LLMGuardrail",
    "LLMGuardrailResult",
    "ToolFailureRecord",
    "_iter_condition_events",
    "_resolve_crew_skills",
    "active_tool_failures",
    "tool_failure_collector",
]


def _check() -> None:
    missing = [f"Crew.{m}()" for m in _CREW_METHODS if not callable(getattr(Crew, m, None))]
    missing += [f"Flow.{m}()" for m in _FLOW_METHODS if not callable(getattr(Flow, m, None))]
    for cls, names in ((Crew, _CREW_PRIVATE), (Task, _TASK_PRIVATE), (Flow, _FLOW_PRIVATE)):
        # pydantic keeps private attributes apart from fields: either kind will do.
        known = set(getattr(cls, "__private_attributes__", {})) | set(
            getattr(cls, "model_fields", {})
        )
        missing += [f"{cls.__name__}.{n}" for n in names if n not in known]
    # A streaming kickoff's chunk source, wrapped to hold a run slot while it is read (crew.py).
    stream = CrewStreamingOutput()
    missing += [
        f"CrewStreamingOutput.{n}"
        for n in ("_sync_iterator", "_async_iterator")
        if not hasattr(stream, n)
    ]
    if missing:
        raise _incompatible(f"it no longer has {', '.join(missing)}")


_check()
