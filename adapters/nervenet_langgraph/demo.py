"""``nervenet demo``'s LangGraph workload: the legal document pipeline, distributed.

The pipeline itself (graph, fake model, documents, checks) is defined once, in
:mod:`nervenet_langgraph.document_pipeline`, a module that imports no nervenet so that the
production benchmark's peers run it too; this module distributes it for the demo and keeps the
names the example app, the notebook and the tests use, indexed by document number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph import StateGraph

from nervenet import Pool

from .document_pipeline import (
    ASPECTS,
    DEFAULT_LATENCY,
    INSTRUCTIONS,
    MAX_REPAIRS,
    DocumentState,
    Enrichment,
    EnrichTask,
    FakeLegalModel,
    LatencyModel,
    build,
    check,
    constant_latency,
    doc_id,
    document,
    lognormal_latency,
    workflow_input,
)
from .graph import DistributedGraph, distribute

__all__ = [
    "ASPECTS",
    "DEFAULT_LATENCY",
    "INSTRUCTIONS",
    "MAX_REPAIRS",
    "DocumentPipelineDemo",
    "DocumentState",
    "EnrichTask",
    "Enrichment",
    "FakeLegalModel",
    "LatencyModel",
    "build_pipeline",
    "check_result",
    "constant_latency",
    "doc_id",
    "document_input",
    "document_pipeline_demo",
    "lognormal_latency",
    "sample_document",
]


def build_pipeline(
    *,
    latency: LatencyModel = DEFAULT_LATENCY,
    json_rounds: int = 0,
    model: BaseChatModel | None = None,
) -> StateGraph[DocumentState]:
    """The pipeline's builder (not compiled): ``.compile()`` it, or ``distribute`` it (see
    :func:`nervenet_langgraph.document_pipeline.build`)."""
    return build(latency=latency, json_rounds=json_rounds, model=model)


def sample_document(index: int) -> str:
    """Document ``index``: a short contract; about 30% of them lack an effective date."""
    return document(doc_id(index))


def document_input(index: int) -> DocumentState:
    """The graph input for document ``index``."""
    return workflow_input(doc_id(index))


def check_result(index: int, state: Mapping[str, Any]) -> None:
    """Raise ``AssertionError`` unless ``state`` is document ``index``'s correct final state."""
    check(doc_id(index), state)


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
        json_rounds: int = 0,
        name: str = "docs",
    ) -> None:
        self.builder = build_pipeline(latency=latency, json_rounds=json_rounds)
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
