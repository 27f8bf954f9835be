"""Every private LangGraph name the adapter uses is checked when it is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt
from nervenet_langgraph import _compat
from typing_extensions import TypedDict

pytestmark = pytest.mark.langgraph


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        ("import langgraph.pregel._call as m; del m.identifier", "identifier"),
        ("import langgraph.checkpoint.serde.jsonplus as m; del m._option", "_option"),
        # A release that renames what the null-resume getter closes over.
        (
            "import dataclasses, langgraph.pregel._algo as m; f = m._scratchpad\n"
            "def _scratchpad(*a):\n"
            "    pad = f(*a)\n"
            "    getter = pad.get_null_resume\n"
            "    return dataclasses.replace(pad, get_null_resume=lambda c=False: getter(c))\n"
            "m._scratchpad = _scratchpad",
            "null-resume getter",
        ),
    ],
)
def test_a_langgraph_without_what_the_adapter_needs_is_refused_naming_the_tested_range(
    break_it: str, named: str
) -> None:
    code = f"{break_it}\nimport nervenet_langgraph"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "LangGraphVersionError" in result.stderr
    assert named in result.stderr
    assert f"langgraph{_compat.TESTED_LANGGRAPH}" in result.stderr


class State(TypedDict):
    answers: list[str]


def test_peek_sees_an_unused_run_wide_resume_and_not_a_consumed_one() -> None:
    """What a coordinator ships for ``Command(resume=...)`` without an interrupt id: the value
    while no task consumed it, nothing once one did (LangGraph's own getter cannot tell)."""
    peeks: list[object] = []

    def ask(state: State) -> State:
        from langgraph.config import get_config

        peeks.append(_compat.peek_null_resume(get_config()["configurable"]["__pregel_scratchpad"]))
        return {"answers": [interrupt("first?"), interrupt("second?")]}

    builder = StateGraph(State).add_node("ask", ask).add_edge(START, "ask")
    graph = builder.compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "peek"}}
    graph.invoke({"answers": []}, config)
    graph.invoke(Command(resume="one"), config)
    assert peeks == [None, "one"]
