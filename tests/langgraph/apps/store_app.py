"""A graph whose nodes write and read the graph's store, for the test that a store every process
shares reaches nodes on worker processes (README: "give the graph a store every process shares").

Workers: ``nervenet worker store_app:graph`` with NERVENET_REDIS_URL and STORE_PATH set. The
store is LangGraph's ``SqliteStore`` on the file STORE_PATH names: one database that the worker
processes and the caller open each on their own.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.store.sqlite import SqliteStore
from nervenet_langgraph import distribute

from nervenet import Pool

NOTES = ("notes",)


class Visit(TypedDict):
    user: str
    value: int
    recalled: dict[str, Any]


def remember(state: Visit, runtime: Runtime[None]) -> dict[str, Any]:
    assert runtime.store is not None, "the graph has no store"
    runtime.store.put(NOTES, state["user"], {"value": state["value"], "pid": os.getpid()})
    return {}


def recall(state: Visit, runtime: Runtime[None]) -> dict[str, Any]:
    assert runtime.store is not None, "the graph has no store"
    item = runtime.store.get(NOTES, state["user"])
    return {"recalled": {} if item is None else item.value}


def build() -> StateGraph[Visit]:
    builder = StateGraph(Visit)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    return builder


def shared_store(path: str) -> SqliteStore:
    """LangGraph's SQLite store on ``path``; a node may run in any of a worker's threads."""
    store = SqliteStore(sqlite3.connect(path, check_same_thread=False, isolation_level=None))
    store.setup()
    return store


def make_graph(url: str, store: BaseStore) -> Any:
    return distribute(build(), pool=Pool.from_url(url), name="store", store=store)


graph = make_graph(
    os.environ.get("NERVENET_REDIS_URL", "redis://localhost:6379/0"),
    shared_store(os.environ.get("STORE_PATH", ":memory:")),
)
