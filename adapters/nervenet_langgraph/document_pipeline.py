"""The legal document pipeline as a plain LangGraph ``StateGraph``, defined once.

::

    classify -> extract -> enrich x3 (Send) -> validate -> summarize
                                                 |  ^
                                                 v  |  (document invalid: at most once)
                                                repair

Every workload that runs this pipeline builds it here: ``nervenet demo`` and the example app
(through :mod:`nervenet_langgraph.demo`), the tests, ``benchmarks/bench_cluster.py`` and the
production benchmark, whose peers (central LangGraph, arq, Celery) run it in environments that
have LangGraph but not nervenet. So this module imports only LangGraph, langchain-core and the
standard library, and every process of the production benchmark, nervenet's included, loads this
very file by its path (``benchmarks/production/workload.py``): every system runs the same code.

The "LLM" nodes ask :class:`FakeLegalModel`, a chat model whose answers are a pure function of
the prompt (deterministic, no network), after waiting as long as the ``latency`` model says;
``validate`` checks by rule but takes a model call's time too, so a workflow spends a model's
latency in each of its :func:`steps`. Documents are a function of their workflow id
(:func:`document`); about 30% of them lack an effective date: ``validate`` flags them and
``repair`` fills the date in, once. ``json_rounds`` adds a node's own CPU the way a real node
spends it: JSON round trips of the document and the messages it carries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import operator
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send

ASPECTS = ("obligations", "dates", "risks")
"""One ``enrich`` branch per aspect, in this order in the final state."""
MAX_REPAIRS = 1

LatencyModel = Callable[[str, str], float]
"""``latency(workflow_id, step) -> seconds`` an LLM call waits. ``step`` is the node name,
``enrich:<aspect>`` for the three branches and ``validate:2`` for the validation after a repair."""


def constant_latency(seconds: float) -> LatencyModel:
    """Every LLM call waits ``seconds``."""
    return lambda workflow_id, step: seconds


def lognormal_latency(
    median: float, sigma: float, seed: int = 0, cap: float = math.inf
) -> LatencyModel:
    """A seeded lognormal wait per (workflow, step), at most ``cap`` seconds: the same pair
    always waits the same, in whichever system, on whichever worker, in whichever order."""

    def latency(workflow_id: str, step: str) -> float:
        rng = random.Random(f"{seed}/{workflow_id}/{step}")
        return min(cap, median * math.exp(sigma * rng.gauss(0.0, 1.0)))

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
    """The workflow id (``doc-0007``): what the document and the latencies derive from."""
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
    """A chat model for the pipeline: its answer is a pure function of the prompt.

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


# --- the documents -----------------------------------------------------------------------------

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


def _roll(workflow_id: str) -> int:
    # ``doc-0007`` is document 7 of the demo, the notebook and the tests, keyed by its number as
    # it has always been (their outputs show which documents need a repair).
    number = workflow_id.removeprefix("doc-")
    return _digest(f"document-{int(number) if number.isdigit() else workflow_id}")


def needs_repair(workflow_id: str) -> bool:
    """About 30% of the documents lack an effective date: validate sends them to repair."""
    return (_roll(workflow_id) >> 12) % 10 < 3


def kind_of(workflow_id: str) -> str:
    return _KINDS[_roll(workflow_id) % len(_KINDS)]


def parties_of(workflow_id: str) -> list[str]:
    roll = _roll(workflow_id)
    first = (roll >> 4) % len(_NAMES)
    second = (first + 1 + (roll >> 8) % (len(_NAMES) - 1)) % len(_NAMES)
    return [_NAMES[first], _NAMES[second]]


def document(workflow_id: str, size: int = 0) -> str:
    """Workflow ``workflow_id``'s contract, padded with clauses to at least ``size`` characters
    (a few hundred without padding); documents that :func:`needs_repair` have no effective date.
    """
    roll, kind = _roll(workflow_id), kind_of(workflow_id)
    first, second = parties_of(workflow_id)
    lines = [kind.upper(), f"This {kind} is made between {first} and {second}."]
    if not needs_repair(workflow_id):
        month, day = 1 + (roll >> 16) % 12, 1 + (roll >> 20) % 28
        lines.append(f"Effective date: 2024-{month:02d}-{day:02d}.")
    lines += [_OBLIGATIONS[kind], _CLAUSES[(roll >> 24) % len(_CLAUSES)]]
    lines.append("Governing law: the State of Delaware.")
    length = sum(len(line) + 1 for line in lines)
    while length < size:  # a running total: summing every line again made this O(lines²)
        lines.append(_CLAUSES[_digest(f"{workflow_id}/{len(lines)}") % len(_CLAUSES)])
        length += len(lines[-1]) + 1
    return "\n".join(lines)


def workflow_input(workflow_id: str, size: int = 0) -> DocumentState:
    """The graph input of workflow ``workflow_id`` (its document padded to ``size``)."""
    return {
        "doc_id": workflow_id,
        "text": document(workflow_id, size),
        "messages": [HumanMessage(f"Review {workflow_id}.", id=f"{workflow_id}-request")],
    }


def steps(workflow_id: str) -> list[str]:
    """The LLM steps of a workflow in the order they run (``enrich:*`` run at once): 7, or 9
    when its document needs the repair."""
    path = ["classify", "extract", *(f"enrich:{a}" for a in ASPECTS), "validate"]
    if needs_repair(workflow_id):
        path += ["repair", "validate:2"]
    return [*path, "summarize"]


# --- the graph ---------------------------------------------------------------------------------


def build(
    *,
    latency: LatencyModel = DEFAULT_LATENCY,
    json_rounds: int = 0,
    model: BaseChatModel | None = None,
) -> StateGraph[DocumentState]:
    """The pipeline's builder (not compiled): ``.compile()`` it, or ``distribute`` it.

    ``latency`` says how long each LLM call waits; every node does ``json_rounds`` JSON round
    trips of its document and messages (see :func:`think`); ``model`` replaces
    :class:`FakeLegalModel`.
    """
    llm = model or FakeLegalModel()

    async def ask(
        state: Mapping[str, Any], step: str, instruction: str, messages: Sequence[Any] = ()
    ) -> AIMessage:
        think(state["text"], messages, json_rounds)
        await asyncio.sleep(latency(state["doc_id"], step))
        reply = await llm.ainvoke([SystemMessage(instruction), HumanMessage(state["text"])])
        return AIMessage(content=reply.text, id=reply.id, name=step.split(":")[0])

    async def classify(state: DocumentState) -> DocumentState:
        reply = await ask(state, "classify", INSTRUCTIONS["classify"], state["messages"])
        return {"kind": reply.text.strip(), "messages": [reply]}

    async def extract(state: DocumentState) -> DocumentState:
        reply = await ask(state, "extract", INSTRUCTIONS["extract"], state["messages"])
        return {"parties": [p.strip() for p in reply.text.split(";")], "messages": [reply]}

    def fan_out(state: DocumentState) -> list[Send]:
        return [
            Send("enrich", EnrichTask(doc_id=state["doc_id"], text=state["text"], aspect=aspect))
            for aspect in ASPECTS
        ]

    async def enrich(state: EnrichTask) -> DocumentState:
        aspect = state["aspect"]
        reply = await ask(state, f"enrich:{aspect}", INSTRUCTIONS["enrich"].format(aspect=aspect))
        return {"enrichments": [Enrichment(aspect=aspect, note=reply.text)], "messages": [reply]}

    async def validate(state: DocumentState) -> DocumentState:
        think(state["text"], state["messages"], json_rounds)
        repairs = state.get("repairs", 0)
        await asyncio.sleep(
            latency(state["doc_id"], f"validate:{repairs + 1}" if repairs else "validate")
        )
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
        reply = await ask(state, "repair", INSTRUCTIONS["repair"], state["messages"])
        return {
            "text": f"{state['text']}\nEffective date: {reply.text.strip()}.",
            "repairs": state.get("repairs", 0) + 1,
            "messages": [reply],
        }

    async def summarize(state: DocumentState) -> DocumentState:
        reply = await ask(state, "summarize", INSTRUCTIONS["summarize"], state["messages"])
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


def think(text: str, messages: Sequence[Any], rounds: int) -> int:
    """A node's own CPU: ``rounds`` JSON round trips of what it read, as a real node's prompt
    building and response parsing do (a fixed amount of work, not a fixed time, so a slower
    system cannot make the work itself cheaper or dearer). Returns a number derived from the
    work so it cannot be skipped."""
    carried = {"document": text, "messages": [getattr(m, "content", m) for m in messages]}
    size = 0
    for _ in range(rounds):
        size += len(json.loads(json.dumps(carried))["document"])
    return size


# --- checking ----------------------------------------------------------------------------------


def plain(state: Mapping[str, Any]) -> dict[str, Any]:
    """A final state as plain JSON (messages by id): what a peer's worker sends back, and what
    :func:`check` reads as well as the state itself."""
    return {
        "doc_id": state.get("doc_id"),
        "kind": state.get("kind"),
        "parties": state.get("parties"),
        "enrichments": list(state.get("enrichments", [])),
        "issues": state.get("issues"),
        "repairs": state.get("repairs", 0),
        "summary": state.get("summary"),
        "messages": [getattr(m, "id", m) for m in state.get("messages", [])],
    }


def check(workflow_id: str, state: Mapping[str, Any]) -> None:
    """Raise ``AssertionError`` unless ``state`` (a final state or its :func:`plain` form) is
    workflow ``workflow_id``'s correct end."""
    repairs, kind = int(needs_repair(workflow_id)), kind_of(workflow_id)
    problems = []
    if state.get("doc_id") != workflow_id:
        problems.append(f"doc_id {state.get('doc_id')!r}")
    if state.get("kind") != kind:
        problems.append(f"kind {state.get('kind')!r}, expected {kind!r}")
    if state.get("parties") != parties_of(workflow_id):
        problems.append(f"parties {state.get('parties')!r}")
    if state.get("issues") != []:
        problems.append(f"issues {state.get('issues')!r}")
    if state.get("repairs", 0) != repairs:
        problems.append(f"{state.get('repairs', 0)} repairs, expected {repairs}")
    if [e["aspect"] for e in state.get("enrichments", [])] != list(ASPECTS):
        problems.append(f"enrichments {state.get('enrichments')!r}")
    if not str(state.get("summary", "")).startswith(kind.capitalize()):
        problems.append(f"summary {state.get('summary')!r}")
    # The request, then one answer per step but validate's (a rule with a model's latency).
    expected_messages = 1 + len(steps(workflow_id)) - 1 - repairs
    if len(state.get("messages", [])) != expected_messages:
        problems.append(f"{len(state.get('messages', []))} messages, expected {expected_messages}")
    if problems:
        raise AssertionError(f"{workflow_id}: " + "; ".join(problems))


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
