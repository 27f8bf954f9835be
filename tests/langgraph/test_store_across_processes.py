"""The graph's store, as README asks for it: one every process shares, reached by nodes that run
on worker processes (the in-process store test cannot tell a shared store from a local one)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph")

from langgraph.store.memory import InMemoryStore

from nervenet.testing import ChildProcesses

pytestmark = [pytest.mark.langgraph, pytest.mark.redis]

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from store_app import NOTES, make_graph, shared_store  # noqa: E402

VISIT = {"user": "ada", "value": 7, "recalled": {}}


async def test_a_shared_store_holds_what_a_node_on_a_worker_process_wrote(
    processes: ChildProcesses, redis_url: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "store.db")
    worker = processes.worker("store_app:graph", redis_url, env={"STORE_PATH": path})
    worker.wait_for_line("serving", timeout=60)
    store = shared_store(path)
    graph = make_graph(redis_url, store)  # this process serves no node: the worker runs both

    async with graph.nervenet.pool:
        result = await graph.ainvoke(VISIT)

    written = {"value": 7, "pid": worker.pid}
    assert worker.pid != os.getpid()
    assert result["recalled"] == written  # the next node read it back from the store
    item = store.get(NOTES, "ada")
    assert item is not None and item.value == written  # and the caller sees it too


async def test_an_in_memory_store_is_per_process_so_the_caller_never_sees_a_workers_write(
    processes: ChildProcesses, redis_url: str
) -> None:
    worker = processes.worker("store_app:graph", redis_url)  # no STORE_PATH: its own memory
    worker.wait_for_line("serving", timeout=60)
    store = InMemoryStore()
    graph = make_graph(redis_url, store)

    async with graph.nervenet.pool:
        result = await graph.ainvoke(VISIT)

    assert result["recalled"] == {"value": 7, "pid": worker.pid}  # the worker's own store
    assert store.get(NOTES, "ada") is None
