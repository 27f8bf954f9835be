"""CrewAI on a nervenet pool: each kickoff gets its own coordinator, agents' work runs on workers.

::

    from nervenet_crewai.offline import go_offline
    go_offline()                      # before crewai is imported (tests, examples, air gaps)

    from nervenet import Pool
    from nervenet_crewai import distribute_crew, distribute_flow

    crew = distribute_crew(make_crew, pool=Pool.from_url(url), name="research")
    output = crew.kickoff(inputs={"topic": "tides"})

    run = await crew.asubmit(inputs={...}, run_id="order-7")      # durable: taken over on a crash
    flows = distribute_flow(MyFlow, pool=pool, name="reports")    # CrewAI Flows, durable runs
    output = await flows.kickoff_async(inputs={"topic": "tides"})

Workers: ``nervenet worker app:crew``. What stays with CrewAI on the coordinator and what runs on
workers is described in :mod:`nervenet_crewai.remote_agent`; durable kickoffs in
:mod:`nervenet_crewai.durable`; flows in :mod:`nervenet_crewai.flow`.

The CrewAI-based names below load on first use, so that ``nervenet_crewai.offline`` can run
before anything imports ``crewai`` (CrewAI reads its telemetry switches at import time).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .crew import DistributedCrew, distribute_crew
    from .durable import KickoffHandle
    from .flow import (
        DistributedFlow,
        FeedbackAlreadyGiven,
        FlowRun,
        NotWaitingForFeedback,
        PauseForFeedback,
        distribute_flow,
    )
    from .flow_persistence import RedisFlowPersistence
    from .remote_llm import RemoteLLM
    from .run import CrewRun, DispatchPolicy
    from .runner import current_task

_EXPORTS = {
    "DistributedCrew": ".crew",
    "distribute_crew": ".crew",
    "KickoffHandle": ".durable",
    "DistributedFlow": ".flow",
    "FlowRun": ".flow",
    "FeedbackAlreadyGiven": ".flow",
    "NotWaitingForFeedback": ".flow",
    "PauseForFeedback": ".flow",
    "distribute_flow": ".flow",
    "RedisFlowPersistence": ".flow_persistence",
    "CrewRun": ".run",
    "DispatchPolicy": ".run",
    "RemoteLLM": ".remote_llm",
    "current_task": ".runner",
}

__all__ = [
    "CrewRun",
    "DispatchPolicy",
    "DistributedCrew",
    "DistributedFlow",
    "FeedbackAlreadyGiven",
    "FlowRun",
    "KickoffHandle",
    "NotWaitingForFeedback",
    "PauseForFeedback",
    "RedisFlowPersistence",
    "RemoteLLM",
    "current_task",
    "distribute_crew",
    "distribute_flow",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nervenet_crewai' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
