"""Payloads read from Redis are untrusted: the strict serializer revives no callable they name."""

from __future__ import annotations

import operator
import threading
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import ormsgpack
import pytest
from langgraph.graph import START, StateGraph
from nervenet_langgraph import distribute, strict_serializer
from nervenet_langgraph.wire import unpack

from nervenet import Pool

pytestmark = pytest.mark.langgraph

EXT_CONSTRUCTOR_POS_ARGS = 1  # langgraph.checkpoint.serde.jsonplus: (module, name, args)


@dataclass
class Address:
    city: str


class State(TypedDict):
    home: Address
    notes: Annotated[list[str], operator.add]


def crafted(module: str, name: str, args: list[Any]) -> bytes:
    """A msgpack payload that asks the decoder to call ``module.name(*args)``."""
    ext = ormsgpack.Ext(EXT_CONSTRUCTOR_POS_ARGS, ormsgpack.packb((module, name, args)))
    return b"msgpack\0" + ormsgpack.packb({"input": ext})


@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("os", "system", ["touch /tmp/nervenet-pwned"]),
        ("subprocess", "Popen", [["touch", "/tmp/nervenet-pwned"]]),
        ("builtins", "eval", ["__import__('os').system('touch /tmp/nervenet-pwned')"]),
    ],
)
def test_a_payload_naming_a_callable_is_refused(
    module: str, name: str, args: list[Any], tmp_path: Any
) -> None:
    serde = strict_serializer([State])
    called: list[Any] = []
    import importlib

    target = importlib.import_module(module)
    original = getattr(target, name)
    setattr(target, name, lambda *a, **k: called.append(a))
    try:
        decoded = unpack(serde, crafted(module, name, args))
    finally:
        setattr(target, name, original)
    assert called == [], f"{module}.{name} was called while decoding"
    assert not callable(decoded["input"])


def test_the_graphs_own_schema_types_are_revived() -> None:
    serde = strict_serializer([State])
    type_tag, data = serde.dumps_typed({"home": Address(city="Oslo")})
    assert serde.loads_typed((type_tag, data)) == {"home": Address(city="Oslo")}


def test_a_pickle_payload_is_refused() -> None:
    import pickle

    serde = strict_serializer([State])
    with pytest.raises(ValueError, match="not a nervenet LangGraph frame"):
        unpack(serde, b"pickle\0" + pickle.dumps({"a": 1}))


async def test_distributed_graph_round_trips_its_schema_types() -> None:
    def move(state: State) -> dict[str, Any]:
        return {"home": Address(city=state["home"].city.upper()), "notes": ["moved"]}

    builder = StateGraph(State)
    builder.add_node("move", move)
    builder.add_edge(START, "move")
    async with Pool.local() as pool:
        graph = distribute(builder, pool=pool, name="safety")
        await pool.serve(graph)
        result = await graph.ainvoke({"home": Address(city="oslo"), "notes": []})
    assert result == {"home": Address(city="OSLO"), "notes": ["moved"]}


def test_the_crafted_payload_does_execute_under_langgraphs_permissive_default() -> None:
    """Control: proves the payload above is a real attack, not a malformed message."""
    import os

    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    permissive = JsonPlusSerializer(allowed_msgpack_modules=True)
    called: list[Any] = []
    original = os.system

    def system(command: Any) -> int:  # (os.system's own parameter name)
        called.append((command,))
        return 0

    os.system = system
    try:
        unpack(permissive, crafted("os", "system", ["echo pwned"]))
    finally:
        os.system = original
    assert called == [("echo pwned",)]


class Holding(TypedDict):
    resource: Any
    trail: Annotated[list[str], operator.add]


async def test_state_a_worker_cannot_be_sent_names_the_node_and_the_field() -> None:
    async def use(state: Holding) -> dict[str, Any]:
        return {"trail": ["used"]}

    builder = StateGraph(Holding)
    builder.add_node("use", use)
    builder.add_edge(START, "use")
    graph = distribute(builder, pool=Pool.local(), name="holding")
    async with graph.nervenet.pool as pool:
        await pool.serve(graph)
        with pytest.raises(
            TypeError,
            match="'use' cannot be sent to a worker: its input's field 'resource' holds a lock",
        ):
            await graph.ainvoke({"resource": threading.Lock(), "trail": []})
