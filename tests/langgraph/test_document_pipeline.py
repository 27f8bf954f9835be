"""The document pipeline (``nervenet_langgraph.demo``): distributed it gives plain LangGraph's
results, its ``Send`` branches run at once on separate workers, invalid documents take the repair
loop once, and ``nervenet demo`` and the example app run it."""

from __future__ import annotations

import pytest

pytest.importorskip("langgraph")

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fast_settings import FAST
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from nervenet_langgraph import distribute
from nervenet_langgraph.demo import (
    ASPECTS,
    INSTRUCTIONS,
    FakeLegalModel,
    build_pipeline,
    check_result,
    constant_latency,
    document_input,
    sample_document,
)

from nervenet import Pool
from nervenet.testing import ChildProcesses, child_environment, nervenet_script

pytestmark = pytest.mark.langgraph

REPO = Path(__file__).resolve().parents[2]
NERVENET = nervenet_script()
NO_WAIT = constant_latency(0.0)
DOCUMENTS = range(16)


def lacks_effective_date(index: int) -> bool:
    return "Effective date" not in sample_document(index)


async def nodes_run(graph: Any, index: int) -> list[str]:
    """The nodes that ran for document ``index``, in superstep order."""
    updates = [u async for u in graph.astream(document_input(index), stream_mode="updates")]
    return [node for update in updates for node in update]


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[Pool]:
    """The package's ``pool`` (embedded and real Redis), closed even when a cancel is lost.

    On Python 3.11, ``asyncio.wait_for`` (used by fakeredis' async client and the embedded
    transport) drops a cancellation that races the awaited result; a worker loop whose cancel was
    dropped keeps running and ``aclose()`` waits for it forever. Cancel such tasks again.
    """
    if request.param == "embedded":
        made = Pool.local(settings=FAST)
    else:
        made = Pool.from_url(request.getfixturevalue("redis_url"), settings=FAST)
    await made.ensure_started()
    try:
        yield made
    finally:
        closing = asyncio.ensure_future(made.aclose())
        while not (await asyncio.wait({closing}, timeout=1.0))[0]:
            for task in asyncio.all_tasks():
                if task.cancelling() and not task.done():
                    task.cancel()
        await closing


def child_env(**extra: str) -> dict[str, str]:
    return child_environment(COLUMNS="250", NO_COLOR="1", TERM="dumb", **extra)


async def test_final_states_match_plain_langgraph(distributed: Any) -> None:
    plain = build_pipeline(latency=NO_WAIT).compile()
    graph = await distributed(build_pipeline(latency=NO_WAIT), workers=2)

    expected = [await plain.ainvoke(document_input(i)) for i in DOCUMENTS]
    results = await asyncio.gather(*(graph.ainvoke(document_input(i)) for i in DOCUMENTS))

    assert results == expected
    for index, state in zip(DOCUMENTS, results, strict=True):
        check_result(index, state)


async def test_send_branches_run_at_once_on_separate_workers(pool: Pool) -> None:
    branch_seconds = 0.5

    def only_enrich_waits(workflow_id: str, step: str) -> float:
        return branch_seconds if step.startswith("enrich:") else 0.0

    graph = distribute(build_pipeline(latency=only_enrich_waits), pool=pool, name="parallel")
    # One task at a time per worker: three branches can only overlap on three workers.
    workers = [await pool.serve(graph, concurrency=1) for _ in ASPECTS]

    started = time.perf_counter()
    state = await graph.ainvoke(document_input(0))
    elapsed = time.perf_counter() - started

    check_result(0, state)
    assert branch_seconds <= elapsed < 2 * branch_seconds
    assert all(worker.processed >= 1 for worker in workers)


async def test_documents_without_an_effective_date_are_repaired_once(distributed: Any) -> None:
    graph = await distributed(build_pipeline(latency=NO_WAIT))
    straight = ["classify", "extract", *["enrich"] * len(ASPECTS), "validate", "summarize"]
    repaired = [*straight[:-1], "repair", "validate", "summarize"]
    missing = [i for i in DOCUMENTS if lacks_effective_date(i)]
    assert 0 < len(missing) < len(DOCUMENTS)

    for index in DOCUMENTS:
        assert await nodes_run(graph, index) == (repaired if index in missing else straight)


class StubbornModel(FakeLegalModel):
    """Never proposes a usable effective date."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        result = super()._generate(messages, *args, **kwargs)
        if messages[0].text == INSTRUCTIONS["repair"]:
            result.generations[0].message = AIMessage("no idea", id="stubborn")
        return result


async def test_a_failed_repair_is_not_retried(distributed: Any) -> None:
    index = next(i for i in DOCUMENTS if lacks_effective_date(i))
    graph = await distributed(build_pipeline(latency=NO_WAIT, model=StubbornModel()))

    state = await graph.ainvoke(document_input(index))

    assert state["repairs"] == 1
    assert state["issues"] == ["no effective date"]
    assert state["summary"]


@pytest.mark.parametrize("backend", ["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def test_nervenet_demo_runs_the_langgraph_pipeline(
    request: pytest.FixtureRequest, backend: str
) -> None:
    redis = ["--redis", request.getfixturevalue("redis_url")] if backend == "redis" else []

    demo = subprocess.run(
        [NERVENET, "demo", "--workflows", "30", *redis],
        capture_output=True,
        text=True,
        timeout=90,
        env=child_env(),
    )

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "document pipeline (LangGraph StateGraph)" in demo.stdout
    assert re.search(
        r"30 workflows in [\d.]+ s: \d+ workflows/s, p50 [\d.]+ ms, p99 [\d.]+ ms", demo.stdout
    ), demo.stdout


def test_example_runs_on_an_embedded_pool() -> None:
    run = subprocess.run(
        [sys.executable, "examples/document_pipeline.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[1].startswith("doc-0001 (repaired): Lease between")


@pytest.mark.redis
def test_example_runs_against_a_worker_process(redis_url: str) -> None:
    with ChildProcesses(REPO, {"NO_COLOR": "1"}) as processes:
        worker = processes.worker("examples.document_pipeline:graph", redis_url)
        worker.wait_for_line("serving docs/classify", timeout=60)
        run = subprocess.run(
            [sys.executable, "examples/document_pipeline.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(NERVENET_REDIS_URL=redis_url),
        )
        stopped = worker.stop(grace=30)

    assert run.returncode == 0, run.stdout + run.stderr
    assert len(run.stdout.splitlines()) == 6
    assert stopped == 0, worker.output()


def test_notebook_runs_in_jupyters_event_loop() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(REPO / "examples" / "document_pipeline.ipynb", as_version=4)

    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()

    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert " validate: ['no effective date']" in outputs
    assert "20 documents summarized, 7 repaired" in outputs
