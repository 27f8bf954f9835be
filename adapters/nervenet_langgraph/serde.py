"""LangGraph's own serializer, locked down: only the graph's schema types are ever revived.

``JsonPlusSerializer`` by default imports and calls any ``module.name`` a msgpack payload names.
Everything we read from Redis is untrusted, so the serializer here allows exactly LangGraph's and
LangChain's safe types (``SAFE_MSGPACK_TYPES``) plus the classes that appear in the graph's own
state, input, output and context schemas (pydantic models, dataclasses, enums, named tuples found
by walking their type hints), plus whatever the user lists explicitly. A payload naming anything
else (``os.system``, ``subprocess.Popen``) is refused, and pickle is never used.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Iterable
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel

_MAX_DEPTH = 8


def strict_serializer(
    schemas: Iterable[Any] = (), allowed_types: Iterable[type] = ()
) -> JsonPlusSerializer:
    """A serializer that revives only safe LangGraph types and the classes of ``schemas``."""
    allowed: set[type] = set(allowed_types)
    for schema in schemas:
        _collect(schema, allowed, depth=0)
    return JsonPlusSerializer(
        pickle_fallback=False,
        allowed_json_modules=None,
        allowed_msgpack_modules=sorted(allowed, key=lambda t: (t.__module__, t.__qualname__))
        or None,
    )


def graph_schemas(builder: Any) -> list[Any]:
    """Every schema a StateGraph builder knows of: state, input, output, context, node inputs."""
    schemas: list[Any] = list(getattr(builder, "schemas", {}) or {})
    for attr in ("state_schema", "input_schema", "output_schema", "context_schema"):
        schema = getattr(builder, attr, None)
        if schema is not None:
            schemas.append(schema)
    for spec in getattr(builder, "nodes", {}).values():
        if getattr(spec, "input_schema", None) is not None:
            schemas.append(spec.input_schema)
    return schemas


def _revivable(cls: type) -> bool:
    return (
        (isinstance(cls, type) and issubclass(cls, BaseModel))
        or dataclasses.is_dataclass(cls)
        or (isinstance(cls, type) and issubclass(cls, enum.Enum))
        or (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields"))
    )


def _collect(tp: Any, found: set[type], depth: int) -> None:
    if depth > _MAX_DEPTH or tp is None:
        return
    origin = typing.get_origin(tp)
    if origin is not None:
        for arg in typing.get_args(tp):
            _collect(arg, found, depth + 1)
        if isinstance(origin, type) and _revivable(origin):
            found.add(origin)
        return
    if not isinstance(tp, type) or tp in found:
        return
    if _revivable(tp):
        found.add(tp)
    elif not typing.is_typeddict(tp):
        return
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except Exception:  # unresolved forward references: collect what the class itself gives
        hints = dict(getattr(tp, "__annotations__", {}))
    for hint in hints.values():
        _collect(hint, found, depth + 1)
