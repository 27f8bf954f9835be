"""The production table's workload: the document pipeline as a plain LangGraph ``StateGraph``.

::

    classify -> extract -> enrich x3 (Send, merged with operator.add) -> validate -> summarize
                                                                            |  ^
                                                  invalid (~30%), at most once v  | repair

Every node is an "LLM" node: 7 per workflow, 9 when the document needs its repair. Each one

* burns about 0.9 ms of CPU the way a real node does: JSON round trips of the ~10 KB document it
  carries and the messages so far (a fixed amount of work, :data:`JSON_ROUNDS`, not a fixed time,
  so a slower system cannot make the work itself cheaper or dearer);
* then awaits its "model": a latency drawn from a lognormal (median 150 ms, sigma 0.5, capped at
  2 s) seeded by (workflow id, step), so every system waits exactly the same for the same workflow.

:func:`ideal_latency` is the sum of the latencies on a workflow's critical path (the slowest of
the three branches counts): what a system with no overhead and no queueing would take.
:func:`summary` reduces a final state to plain JSON (what the arq and Celery workers send back)
and :func:`check` verifies it, so every workflow of every system is checked end to end.

Plain LangGraph only (no nervenet import): the peers' environments import this module too.
The document pipeline of ``nervenet_langgraph.demo`` is the same shape, but its documents are
~400 bytes, its ``validate`` waits for no model and it burns CPU by hashing; the issue fixes a
heavier, JSON-bound node, so the benchmark keeps its own copy of the shape here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import operator
import random
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send

ASPECTS = ("obligations", "dates", "risks")
MEDIAN_S = 0.150
SIGMA = 0.5
CAP_S = 2.0
SEED = 8  # the issue's number: changing it changes every figure
DOC_BYTES = 10_240
REPAIR_SHARE = 0.30
#: JSON round trips of (document, messages) per node: ~0.9 ms of CPU on the reference machine.
JSON_ROUNDS = 29
STEPS_PLAIN = ("classify", "extract", "validate", "summarize")


# --- what each workflow is, decided by its id alone -----------------------------------------
def _roll(*parts: str) -> int:
    text = "/".join((str(SEED), *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def needs_repair(wf: str) -> bool:
    """About 30% of documents lack their effective date: validate sends them to repair, once."""
    return _roll(wf, "repair") % 1000 < REPAIR_SHARE * 1000


def latency(wf: str, step: str) -> float:
    """Seconds the model takes for ``step`` of workflow ``wf`` (the same in every system)."""
    rng = random.Random(_roll(wf, step))
    return min(CAP_S, MEDIAN_S * math.exp(SIGMA * rng.gauss(0.0, 1.0)))


def critical_path(wf: str) -> list[str]:
    """The steps in the order they run; ``enrich:*`` are concurrent (only the slowest counts)."""
    steps = ["classify", "extract", *(f"enrich:{a}" for a in ASPECTS), "validate"]
    if needs_repair(wf):
        steps += ["repair", "validate:2"]
    return [*steps, "summarize"]


def node_count(wf: str) -> int:
    """LLM nodes a workflow runs: 7, or 9 with its repair."""
    return len(critical_path(wf))


def ideal_latency(wf: str) -> float:
    """Sum of the model latencies on the workflow's critical path (seconds)."""
    steps = critical_path(wf)
    branches = max(latency(wf, s) for s in steps if s.startswith("enrich:"))
    return branches + sum(latency(wf, s) for s in steps if not s.startswith("enrich:"))


_CLAUSES = (
    "The Provider shall deliver the services described in Schedule {n} every month.",
    "The Client shall pay each invoice within {n} days of receipt.",
    "Liability is capped at the fees paid in the last {n} months.",
    "Either party may terminate this agreement on {n} days written notice.",
    "Late payment incurs a penalty of {n}% per month on the outstanding amount.",
    "The Recipient shall keep the Information confidential for {n} years.",
)
_PARTIES = ("Acme Corp", "Globex Ltd", "Initech LLC", "Umbrella plc", "Hooli Inc", "Soylent Co")
_KINDS = ("service agreement", "lease", "non-disclosure agreement")


def kind_of(wf: str) -> str:
    return _KINDS[_roll(wf, "kind") % len(_KINDS)]


def parties_of(wf: str) -> list[str]:
    first = _roll(wf, "party") % len(_PARTIES)
    return [_PARTIES[first], _PARTIES[(first + 1) % len(_PARTIES)]]


def document(wf: str) -> str:
    """A ~10 KB contract; documents that need repair have no effective date."""
    a, b = parties_of(wf)
    lines = [kind_of(wf).upper(), f"This {kind_of(wf)} is made between {a} and {b}."]
    if not needs_repair(wf):
        lines.append("Effective date: 2024-03-01.")
    n, size = 0, sum(len(line) + 1 for line in lines)
    while size < DOC_BYTES:  # a running total: summing every line again made this O(lines²)
        lines.append(_CLAUSES[n % len(_CLAUSES)].format(n=1 + (_roll(wf, str(n)) % 90)))
        size += len(lines[-1]) + 1
        n += 1
    return "\n".join(lines)


# --- the graph ---------------------------------------------------------------------------------
class Enrichment(TypedDict):
    aspect: str
    note: str


class DocState(TypedDict, total=False):
    wf: str
    text: str
    messages: Annotated[list[AnyMessage], add_messages]
    kind: str
    parties: list[str]
    enrichments: Annotated[list[Enrichment], operator.add]
    issues: list[str]
    validations: int
    repairs: int
    summary: str


class EnrichTask(TypedDict):
    wf: str
    text: str
    aspect: str


def _think(text: str, messages: list[Any]) -> int:
    """The node's own CPU: JSON round trips of what it read, as a real node's prompt building and
    response parsing do. Returns a number derived from the work so it cannot be skipped."""
    carried = {"document": text, "messages": [getattr(m, "content", m) for m in messages]}
    size = 0
    for _ in range(JSON_ROUNDS):
        size += len(json.loads(json.dumps(carried))["document"])
    return size


async def _model(wf: str, step: str, answer: str) -> AIMessage:
    await asyncio.sleep(latency(wf, step))
    return AIMessage(content=answer, id=f"{wf}:{step}", name=step.split(":")[0])


async def classify(state: DocState) -> DocState:
    _think(state["text"], state["messages"])
    reply = await _model(state["wf"], "classify", state["text"].splitlines()[0].lower())
    return {"kind": str(reply.content), "messages": [reply]}


async def extract(state: DocState) -> DocState:
    _think(state["text"], state["messages"])
    between = state["text"].splitlines()[1].split(" between ", 1)[1].rstrip(".")
    reply = await _model(state["wf"], "extract", between.replace(" and ", "; "))
    return {"parties": str(reply.content).split("; "), "messages": [reply]}


def fan_out(state: DocState) -> list[Send]:
    return [
        Send("enrich", EnrichTask(wf=state["wf"], text=state["text"], aspect=aspect))
        for aspect in ASPECTS
    ]


async def enrich(task: EnrichTask) -> DocState:
    _think(task["text"], [])
    found = [line for line in task["text"].splitlines() if task["aspect"][:4] in line.lower()]
    reply = await _model(task["wf"], f"enrich:{task['aspect']}", "\n".join(found[:5]) or "none")
    return {"enrichments": [Enrichment(aspect=task["aspect"], note=str(reply.content))]}


async def validate(state: DocState) -> DocState:
    _think(state["text"], state["messages"])
    done = state.get("validations", 0)
    issues = [] if "Effective date:" in state["text"] else ["no effective date"]
    step = "validate" if done == 0 else f"validate:{done + 1}"
    reply = await _model(state["wf"], step, "; ".join(issues) or "valid")
    return {"issues": issues, "validations": done + 1, "messages": [reply]}


def after_validate(state: DocState) -> Literal["repair", "summarize"]:
    return "repair" if state["issues"] and state.get("repairs", 0) < 1 else "summarize"


async def repair(state: DocState) -> DocState:
    _think(state["text"], state["messages"])
    reply = await _model(state["wf"], "repair", "2025-01-01")
    return {
        "text": f"{state['text']}\nEffective date: {reply.content}.",
        "repairs": state.get("repairs", 0) + 1,
        "messages": [reply],
    }


async def summarize(state: DocState) -> DocState:
    _think(state["text"], state["messages"])
    kind, parties = state["kind"], " and ".join(state["parties"])
    reply = await _model(state["wf"], "summarize", f"{kind.capitalize()} between {parties}.")
    return {"summary": str(reply.content), "messages": [reply]}


def build() -> StateGraph[DocState]:
    """The pipeline's builder: ``.compile()`` it, ``distribute`` it, or run it in a task."""
    builder = StateGraph(DocState)
    for node in (classify, extract, enrich, validate, repair, summarize):
        builder.add_node(node.__name__, node)  # type: ignore[call-overload]
    builder.add_edge(START, "classify")
    builder.add_edge("classify", "extract")
    builder.add_conditional_edges("extract", fan_out, ["enrich"])
    builder.add_edge("enrich", "validate")
    builder.add_conditional_edges("validate", after_validate)
    builder.add_edge("repair", "validate")
    return builder


def initial_state(wf: str) -> DocState:
    return {"wf": wf, "text": document(wf), "messages": [HumanMessage(f"Review {wf}.", id=wf)]}


# --- checking ----------------------------------------------------------------------------------
def summary(state: dict[str, Any]) -> dict[str, Any]:
    """A final state as plain JSON: what a peer's worker returns, what :func:`check` reads."""
    return {
        "wf": state.get("wf"),
        "text_bytes": len(state.get("text", "")),
        "kind": state.get("kind"),
        "parties": state.get("parties"),
        "enrichments": sorted(e["aspect"] for e in state.get("enrichments", [])),
        "issues": state.get("issues"),
        "repairs": state.get("repairs", 0),
        "summary": state.get("summary"),
        "messages": [getattr(m, "id", None) for m in state.get("messages", [])],
    }


def check(wf: str, result: dict[str, Any]) -> None:
    """Raise ``AssertionError`` unless ``result`` (a :func:`summary`) is ``wf``'s correct end."""
    repaired = needs_repair(wf)
    steps = [s for s in critical_path(wf) if not s.startswith("enrich:")]
    expected = {
        "wf": wf,
        "kind": kind_of(wf),
        "parties": parties_of(wf),
        "enrichments": sorted(ASPECTS),
        "issues": [],
        "repairs": int(repaired),
        "summary": f"{kind_of(wf).capitalize()} between {' and '.join(parties_of(wf))}.",
        "messages": [wf, *(f"{wf}:{s}" for s in steps)],
    }
    wrong = {k: result.get(k) for k, v in expected.items() if result.get(k) != v}
    if wrong or result.get("text_bytes", 0) < len(document(wf)):
        raise AssertionError(f"{wf}: wrong final state {wrong}")


def node_cpu_ms(samples: int = 200) -> float:
    """CPU milliseconds one node's own work takes here (for the physical-limit line)."""
    import time

    wf = "calibration"
    text, messages = document(wf), [HumanMessage("x" * 200)] * 5
    start = time.thread_time()
    for _ in range(samples):
        _think(text, messages)
    return (time.thread_time() - start) / samples * 1e3
