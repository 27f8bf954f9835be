"""The production table's workload: the document pipeline, made heavy enough to look like one.

The pipeline is ``adapters/nervenet_langgraph/document_pipeline.py``, the one ``nervenet demo``
runs, loaded here **by its path** in every process of every system: the peers' environments have
LangGraph but not nervenet (that module imports no nervenet), and nervenet's own processes load
the same file the same way, so every system provably runs the same code. This module only sets
the pipeline's knobs:

* documents of ~10 KB (:data:`DOC_BYTES`), carried through every node;
* every node burns ~0.9 ms of CPU (on the reference machine) the way a real one does: its model
  call through langchain-core, and :data:`JSON_ROUNDS` JSON round trips of its document and
  messages (a fixed amount of work, not a fixed time);
* every model call waits a latency drawn from a lognormal (median 150 ms, sigma 0.5, capped at
  2 s) seeded by (:data:`SEED`, workflow id, step): every system waits exactly the same for the
  same workflow.

Workflow ids are the load generator's (``c500-17``); 7 nodes run per workflow, 9 when its
document needs a repair (~30%). :func:`ideal_latency` is the sum of the latencies on a
workflow's critical path (the slowest of the three branches counts): what a system with no
overhead and no queueing would take. :func:`summary` reduces a final state to plain JSON (what
the arq and Celery workers send back) and :func:`check` verifies it, so every workflow of every
system is checked end to end.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

if TYPE_CHECKING:
    from nervenet_langgraph import document_pipeline as pipeline
else:
    _PIPELINE = (
        Path(__file__).resolve().parents[2] / "adapters/nervenet_langgraph/document_pipeline.py"
    )

    def _load() -> Any:
        spec = importlib.util.spec_from_file_location("document_pipeline", _PIPELINE)
        assert spec is not None and spec.loader is not None, _PIPELINE
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # LangGraph resolves the state's annotations through it
        spec.loader.exec_module(module)
        return module

    pipeline = _load()

SEED = 8  # the number: changing it changes every figure
DOC_BYTES = 10_240
#: JSON round trips per node; with the model call, ~0.9 ms of CPU on the reference machine.
JSON_ROUNDS = 22
latency = pipeline.lognormal_latency(0.150, 0.5, seed=SEED, cap=2.0)
needs_repair = pipeline.needs_repair
check = pipeline.check
summary = pipeline.plain


def build() -> StateGraph[pipeline.DocumentState]:
    """The pipeline's builder: ``.compile()`` it, ``distribute`` it, or run it in a task."""
    return pipeline.build(latency=latency, json_rounds=JSON_ROUNDS)


def initial_state(wf: str) -> pipeline.DocumentState:
    return pipeline.workflow_input(wf, DOC_BYTES)


@functools.cache
def _compiled() -> CompiledStateGraph[Any, Any, Any, Any]:
    return build().compile()


async def run_whole(wf: str) -> dict[str, Any]:
    """Workflow ``wf`` from start to end in this process with plain LangGraph, as plain JSON:
    what central's process, and the arq and Celery workers, run for each workflow."""
    return summary(await _compiled().ainvoke(initial_state(wf)))


def node_count(wf: str) -> int:
    """LLM nodes a workflow runs: 7, or 9 with its repair."""
    return len(pipeline.steps(wf))


def ideal_latency(wf: str) -> float:
    """Sum of the model latencies on the workflow's critical path (seconds)."""
    steps = pipeline.steps(wf)
    branches = max(latency(wf, s) for s in steps if s.startswith("enrich:"))
    return branches + sum(latency(wf, s) for s in steps if not s.startswith("enrich:"))


def node_cpu_ms(samples: int = 200) -> float:
    """CPU milliseconds one node's own work takes here (for the physical-limit line)."""
    text, messages = pipeline.document("calibration", DOC_BYTES), [HumanMessage("x" * 200)] * 5
    model = pipeline.FakeLegalModel()
    prompt = [SystemMessage(pipeline.INSTRUCTIONS["classify"]), HumanMessage(text)]
    start = time.thread_time()
    for _ in range(samples):
        pipeline.think(text, messages, JSON_ROUNDS)
        model.invoke(prompt)
    return (time.thread_time() - start) / samples * 1e3
