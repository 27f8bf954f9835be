"""The legal document pipeline as a LangGraph ``StateGraph``: ``nervenet demo``'s workload.

::

    classify -> extract -> enrich x3 (Send) -> validate -> summarize
                                                 |  ^
                                                 v  |  (document invalid: at most once)
                                                repair

The graph is plain LangGraph, built by :func:`build_pipeline`; the example app
(``examples/document_pipeline.py``), the notebook, the tests and the benchmarks distribute this one
builder. The "LLM" nodes ask :class:`FakeLegalModel`, a chat model whose answers are a pure
function of the prompt (deterministic, no network), after waiting as long as the ``latency``
model says. About 30% of the sample documents (:func:`sample_document`) lack an effective date:
``validate`` flags them and ``repair`` fills the date in, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import operator
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send

from nervenet import Pool

from .graph import DistributedGraph, distribute

ASPECTS = ("obligations", "dates", "risks")
"""One ``enrich`` branch per aspect, in this order in the final state."""
MAX_REPAIRS = 1

LatencyModel = Callable[[str, str], float]
"""``latency(workflow_id, step) -> seconds`` an LLM call waits. ``workflow_id`` is the
document id; ``step`` is the node name, ``enrich:<aspect>`` for the three branches."""


def constant_latency(seconds: float) -> LatencyModel:
    """Every LLM call waits ``seconds``."""
    return lambda workflow_id, step: seconds


def lognormal_latency(median: float, sigma: float, seed: int = 0) -> LatencyModel:
    """A seeded lognormal wait per (workflow, step): the same pair always waits the same, on
    whichever worker and in whichever order the calls run."""

    def latency(workflow_id: str, step: str) -> float:
        rng = random.Random(f"{seed}/{workflow_id}/{step}")
        return median * math.exp(sigma * rng.gauss(0.0, 1.0))

    return latency


DEFAULT_LATENCY = constant_latency(0.002)
"""A quick LLM: the demo measures nervenet's overhead, not a model's."""


class Enrichment(TypedDict):
    aspect: str
    """One of :data:`ASPECTS`."""
    note: str
    """What the model found, one item a line, or ``none``."""


class DocumentState(TypedDict, total=False):
    doc_id: str
    """``doc-0007``: the workflow id the latency model is asked about."""
    text: str
    """The document; ``repair`` appends the missing clause."""
    messages: Annotated[list[AnyMessage], add_messages]
    """The request, then each model answer in the order the steps ran."""
    kind: str
    """``lease``, ``service agreement`` or ``non-disclosure agreement``."""
    parties: list[str]
    """The two parties, as named in the document."""
    enrichments: Annotated[list[Enrichment], operator.add]
    """One per aspect; the three branches' writes are merged in branch order."""
    issues: list[str]
    """What the last ``validate`` found wrong; empty when the document is valid."""
    repairs: int
    """How many times ``repair`` ran."""
    summary: str
    """One sentence about the document."""


class EnrichTask(TypedDict):
    """What one ``enrich`` branch receives through its ``Send``."""

    doc_id: str
    text: str
    aspect: str


# --- the fake model --------------------------------------------------------------------------

INSTRUCTIONS = {
    "classify": "Classify the document. Answer with its kind only.",
    "extract": "Name the two parties to the document, separated by a semicolon.",
    "enrich": "List the document's {aspect}, one a line, or answer 'none'.",
    "repair": "The document has no effective date. Propose one as YYYY-MM-DD.",
    "summarize": "Summarize the document in one sentence.",
}
_PARTIES = re.compile(r"between (.+?) and (.+?)\.")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RISKY = ("liab", "terminat", "penalt")


class FakeLegalModel(BaseChatModel):
    """A chat model for the demo: its answer is a pure function of the prompt.

    It knows the :data:`INSTRUCTIONS` (system message) and reads the document (last human
    message) with a few regular expressions. Message ids derive from the prompt, so plain and
    distributed runs produce equal states.
    """

    @property
    def _llm_type(self) -> str:
        return "fake-legal"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        instruction = next((m.text for m in messages if isinstance(m, SystemMessage)), "")
        document = messages[-1].text
        prompt_id = _digest(instruction + "\0" + document)
        message = AIMessage(content=_answer(instruction, document), id=f"fake-{prompt_id:016x}")
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, **kwargs)


def _answer(instruction: str, document: str) -> str:
    sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", document) if s.strip()]
    if instruction == INSTRUCTIONS["classify"]:
        return document.splitlines()[0].lower()
    if instruction == INSTRUCTIONS["extract"]:
        found = _PARTIES.search(document)
        return "; ".join(found.groups()) if found else "unknown; unknown"
    if instruction == INSTRUCTIONS["enrich"].format(aspect="obligations"):
        return "\n".join(s for s in sentences if " shall " in s) or "none"
    if instruction == INSTRUCTIONS["enrich"].format(aspect="dates"):
        return "\n".join(_DATE.findall(document)) or "none"
    if instruction == INSTRUCTIONS["enrich"].format(aspect="risks"):
        return "\n".join(s for s in sentences if any(r in s.lower() for r in _RISKY)) or "none"
    if instruction == INSTRUCTIONS["repair"]:
        roll = _digest(document)
        return f"2025-{1 + roll % 12:02d}-{1 + (roll >> 8) % 28:02d}"
    if instruction == INSTRUCTIONS["summarize"]:
        kind = document.splitlines()[0].capitalize()
        parties = _PARTIES.search(document)
        dates = _DATE.findall(document)
        between = f" between {parties[1]} and {parties[2]}" if parties else ""
        effective = f", effective {dates[0]}" if dates else ""
        return f"{kind}{between}{effective}."
    return "I cannot help with that."


# --- the sample documents ----------------------------------------------------------------------

_KINDS = ("service agreement", "lease", "non-disclosure agreement")
_NAMES = (
    "Acme Corp",
    "Globex Ltd",
    "Initech LLC",
    "Umbrella plc",
    "Hooli Inc",
    "Soylent Co",
    "Wayne Enterprises",
    "Stark Industries",
)
_OBLIGATIONS = {
    "service agreement": "The Provider shall deliver the services monthly. "
    "The Client shall pay each invoice within 30 days.",
    "lease": "The Tenant shall pay rent on the first day of each month. "
    "The Landlord shall keep the premises in good repair.",
    "non-disclosure agreement": "The Recipient shall keep the Information confidential. "
    "The Recipient shall return all copies on request.",
}
_CLAUSES = (
    "Liability is capped at the fees paid in the last twelve months.",
    "Either party may terminate this agreement on 30 days notice.",
    "Late payment incurs a penalty of 2% per month.",
)


def doc_id(index: int) -> str:
    return f"doc-{index:04d}"


def sample_document(index: int) -> str:
    """Document ``index``: a short contract; about 30% of them lack an effective date."""
    roll = _digest(f"document-{index}")
    kind = _KINDS[roll % len(_KINDS)]
    first = (roll >> 4) % len(_NAMES)
    second = (first + 1 + (roll >> 8) % (len(_NAMES) - 1)) % len(_NAMES)
    lines = [kind.upper(), f"This {kind} is made between {_NAMES[first]} and {_NAMES[second]}."]
    if (roll >> 12) % 10 >= 3:
        lines.append(
            f"Effective date: 2024-{1 + (roll >> 16) % 12:02d}-{1 + (roll >> 20) % 28:02d}."
        )
    lines += [_OBLIGATIONS[kind], _CLAUSES[(roll >> 24) % len(_CLAUSES)]]
    lines.append("Governing law: the State of Delaware.")
    return "\n".join(lines)


def document_input(index: int) -> DocumentState:
    """The graph input for document ``index``."""
    return {
        "doc_id": doc_id(index),
        "text": sample_document(index),
        "messages": [HumanMessage(f"Review {doc_id(index)}.", id=f"{doc_id(index)}-request")],
    }


# --- the graph ---------------------------------------------------------------------------------


def build_pipeline(
    *,
    latency: LatencyModel = DEFAULT_LATENCY,
    cpu_seconds: float = 0.0,
    model: BaseChatModel | None = None,
) -> StateGraph[DocumentState]:
    """The pipeline's builder (not compiled): ``.compile()`` it, or ``distribute`` it.

    ``latency`` says how long each LLM call waits; ``cpu_seconds`` of CPU are burned in every
    node (hashing), for benchmarks that want work besides waiting; ``model`` replaces
    :class:`FakeLegalModel`.
    """
    llm = model or FakeLegalModel()

    async def ask(workflow_id: str, step: str, instruction: str, document: str) -> AIMessage:
        _burn(cpu_seconds)
        await asyncio.sleep(latency(workflow_id, step))
        reply = await llm.ainvoke([SystemMessage(instruction), HumanMessage(document)])
        return AIMessage(content=reply.text, id=reply.id, name=step)

    async def classify(state: DocumentState) -> DocumentState:
        reply = await ask(state["doc_id"], "classify", INSTRUCTIONS["classify"], state["text"])
        return {"kind": reply.text.strip(), "messages": [reply]}

    async def extract(state: DocumentState) -> DocumentState:
        reply = await ask(state["doc_id"], "extract", INSTRUCTIONS["extract"], state["text"])
        return {"parties": [p.strip() for p in reply.text.split(";")], "messages": [reply]}

    def fan_out(state: DocumentState) -> list[Send]:
        return [
            Send("enrich", EnrichTask(doc_id=state["doc_id"], text=state["text"], aspect=aspect))
            for aspect in ASPECTS
        ]

    async def enrich(state: EnrichTask) -> DocumentState:
        instruction = INSTRUCTIONS["enrich"].format(aspect=state["aspect"])
        reply = await ask(state["doc_id"], f"enrich:{state['aspect']}", instruction, state["text"])
        return {
            "enrichments": [Enrichment(aspect=state["aspect"], note=reply.text)],
            "messages": [reply],
        }

    async def validate(state: DocumentState) -> DocumentState:
        _burn(cpu_seconds)
        issues = []
        if not _DATE.search(state["text"]):
            issues.append("no effective date")
        if len(state["parties"]) != 2 or "unknown" in state["parties"]:
            issues.append("parties not identified")
        if sorted(e["aspect"] for e in state["enrichments"]) != sorted(ASPECTS):
            issues.append("enrichment incomplete")
        return {"issues": issues}

    def after_validate(state: DocumentState) -> Literal["repair", "summarize"]:
        if state["issues"] and state.get("repairs", 0) < MAX_REPAIRS:
            return "repair"
        return "summarize"

    async def repair(state: DocumentState) -> DocumentState:
        reply = await ask(state["doc_id"], "repair", INSTRUCTIONS["repair"], state["text"])
        return {
            "text": f"{state['text']}\nEffective date: {reply.text.strip()}.",
            "repairs": state.get("repairs", 0) + 1,
            "messages": [reply],
        }

    async def summarize(state: DocumentState) -> DocumentState:
        reply = await ask(state["doc_id"], "summarize", INSTRUCTIONS["summarize"], state["text"])
        return {"summary": reply.text, "messages": [reply]}

    builder = StateGraph(DocumentState)
    builder.add_node("classify", classify)
    builder.add_node("extract", extract)
    builder.add_node("enrich", enrich, input_schema=EnrichTask)
    builder.add_node("validate", validate)
    builder.add_node("repair", repair)
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "classify")
    builder.add_edge("classify", "extract")
    builder.add_conditional_edges("extract", fan_out, ["enrich"])
    builder.add_edge("enrich", "validate")
    builder.add_conditional_edges("validate", after_validate)
    builder.add_edge("repair", "validate")
    return builder


def check_result(index: int, state: Mapping[str, Any]) -> None:
    """Raise ``AssertionError`` unless ``state`` is document ``index``'s correct final state."""
    text = sample_document(index)
    repairs = 0 if _DATE.search(text) else 1
    kind = text.splitlines()[0].lower()
    problems = []
    if state.get("doc_id") != doc_id(index):
        problems.append(f"doc_id {state.get('doc_id')!r}")
    if state.get("kind") != kind:
        problems.append(f"kind {state.get('kind')!r}, expected {kind!r}")
    if state.get("issues") != []:
        problems.append(f"issues {state.get('issues')!r}")
    if state.get("repairs", 0) != repairs:
        problems.append(f"{state.get('repairs', 0)} repairs, expected {repairs}")
    if [e["aspect"] for e in state.get("enrichments", [])] != list(ASPECTS):
        problems.append(f"enrichments {state.get('enrichments')!r}")
    if not str(state.get("summary", "")).startswith(kind.capitalize()):
        problems.append(f"summary {state.get('summary')!r}")
    if len(state.get("messages", [])) != 1 + 2 + len(ASPECTS) + repairs + 1:
        problems.append(f"{len(state.get('messages', []))} messages")
    if problems:
        raise AssertionError(f"{doc_id(index)}: " + "; ".join(problems))


# --- nervenet demo -----------------------------------------------------------------------------


class DocumentPipelineDemo:
    """``nervenet demo``'s LangGraph workload: each workflow is one document through the graph."""

    title = (
        "document pipeline (LangGraph StateGraph): classify -> extract -> enrich x3 (Send) "
        "-> validate [-> repair] -> summarize"
    )

    def __init__(
        self,
        *,
        latency: LatencyModel = DEFAULT_LATENCY,
        cpu_seconds: float = 0.0,
        name: str = "docs",
    ) -> None:
        self.builder = build_pipeline(latency=latency, cpu_seconds=cpu_seconds)
        self.name = name
        self._graph: DistributedGraph | None = None

    def graph_on(self, pool: Pool) -> DistributedGraph:
        """The pipeline distributed on ``pool`` (distributed once per pool)."""
        if self._graph is None or self._graph.nervenet.pool is not pool:
            self._graph = distribute(self.builder, pool=pool, name=self.name)
        return self._graph

    def handlers(self, pool: Pool) -> object:
        """What the demo's workers serve: the pipeline distributed on ``pool``."""
        return self.graph_on(pool)

    async def run_workflow(self, pool: Pool, index: int) -> None:
        state = await self.graph_on(pool).ainvoke(
            document_input(index), {"configurable": {"thread_id": doc_id(index)}}
        )
        check_result(index, state)


def document_pipeline_demo() -> DocumentPipelineDemo:
    """Entry point of the ``nervenet.demos`` group (``langgraph``)."""
    return DocumentPipelineDemo()


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _burn(seconds: float) -> None:
    """Burn ``seconds`` of this thread's CPU time."""
    if seconds <= 0:
        return
    block = b"nervenet" * 128
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        block = hashlib.sha256(block).digest() * 32
