"""A LangGraph app ported to nervenet: the legal document pipeline, one line changed.

The app is an ordinary StateGraph (``nervenet_langgraph.demo.build_pipeline``: classify, extract,
three parallel ``enrich`` branches, validate, repair when invalid, summarize). The port::

    graph = build_pipeline().compile()                            # before: one process
    graph = distribute(build_pipeline(), pool=pool, name="docs")  # after: nodes run on the pool

On one machine, nothing to install (embedded pool, workers in this process)::

    python examples/document_pipeline.py

On Redis, workers in other processes (run both from the repository root)::

    nervenet worker examples.document_pipeline:graph --redis redis://localhost:6379/0
    NERVENET_REDIS_URL=redis://localhost:6379/0 python examples/document_pipeline.py
"""

from __future__ import annotations

import asyncio
import os

from nervenet_langgraph import distribute
from nervenet_langgraph.demo import build_pipeline, document_input

from nervenet import Pool

url = os.environ.get("NERVENET_REDIS_URL")
pool = Pool.from_url(url) if url else Pool.local()
graph = distribute(build_pipeline(), pool=pool, name="docs")


async def main(documents: int = 6) -> None:
    async with pool:
        if pool.is_embedded:
            await pool.serve(graph)  # no worker processes can reach an embedded pool
        states = await asyncio.gather(*(graph.ainvoke(document_input(i)) for i in range(documents)))
    for state in states:
        repaired = " (repaired)" if state.get("repairs") else ""
        print(f"{state['doc_id']}{repaired}: {state['summary']}")


if __name__ == "__main__":
    asyncio.run(main())
