"""LangGraph's own serializer, locked down: only the graph's own types are ever revived.

``JsonPlusSerializer`` by default imports and calls any ``module.name`` a msgpack payload names.
Everything we read from Redis is untrusted, so the serializer here revives exactly LangGraph's and
LangChain's safe types (``SAFE_MSGPACK_TYPES``) plus the classes that appear in the graph's own
state, input, output and context schemas (pydantic models, dataclasses, enums, named tuples found
by walking their type hints), plus whatever the user lists explicitly. A payload naming anything
else (``os.system``, ``subprocess.Popen``) comes back as its raw data, and pickle is never used.

Three things LangGraph's msgpack format loses that a node running in-process never loses, which is
why encoding and decoding are partly our own here (the wire format stays LangGraph's ext codes):

- The graph's classes are revived *by identity*, never by import: LangGraph re-imports
  ``module.name``, which cannot find a class defined inside a function (tests, notebooks,
  factories) and silently hands the node a dict instead.
- A pydantic model of the graph travels as its fields (nested values encoded recursively) plus
  ``model_fields_set`` and is rebuilt with ``model_construct``: re-validating would run
  ``after`` validators a second time, and ``Command(update=State(bar=...))`` would come back
  with every field "set", overwriting the ones the node never touched.
- Tuples stay tuples (``Command(update=[("key", value)])`` is a list of writes, not of lists).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import importlib
import typing
from collections.abc import Callable, Iterable
from typing import Any

import ormsgpack
import typing_extensions
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import SendProtocol
from pydantic import BaseModel, TypeAdapter

from ._compat import jsonplus, lg_msgpack

_MAX_DEPTH = 8
_EXT_TUPLE = 64  # beyond LangGraph's ext codes (0-7)
_CLASS_EXTS = (
    jsonplus.EXT_CONSTRUCTOR_SINGLE_ARG,
    jsonplus.EXT_CONSTRUCTOR_POS_ARGS,
    jsonplus.EXT_CONSTRUCTOR_KW_ARGS,
    jsonplus.EXT_PYDANTIC_V1,
    jsonplus.EXT_PYDANTIC_V2,
)
_PACK_OPTIONS = jsonplus._option | ormsgpack.OPT_PASSTHROUGH_TUPLE
_UNPACK_OPTIONS = ormsgpack.OPT_NON_STR_KEYS

ClassKey = tuple[str, str]


class StrictSerializer(JsonPlusSerializer):
    """``JsonPlusSerializer`` that revives only safe LangGraph types and the graph's classes."""

    def __init__(self, classes: Iterable[type]) -> None:
        self._classes: dict[ClassKey, type] = {}
        for cls in classes:
            self._classes.setdefault(_key(cls), cls)
        super().__init__(
            pickle_fallback=False,
            allowed_json_modules=None,
            allowed_msgpack_modules=sorted(self._classes) or None,
            __unpack_ext_hook__=self._ext_hook,
        )

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, (bytes, bytearray)):
            return super().dumps_typed(obj)
        return "msgpack", self._pack(obj)

    def _pack(self, obj: Any) -> bytes:
        return ormsgpack.packb(obj, default=self._default, option=_PACK_OPTIONS)

    def _default(self, obj: Any) -> Any:
        cls = type(obj)
        if cls is tuple:
            return ormsgpack.Ext(_EXT_TUPLE, self._pack(list(obj)))
        own = _key(cls) not in lg_msgpack.SAFE_MSGPACK_TYPES
        if own and _revivable(cls):
            # A class this process hands to the wire is one of the graph's values; remember it
            # so an in-process reader (an embedded pool) revives it too. Only classes this
            # process encoded itself get here, never a name read from a payload.
            self._classes.setdefault(_key(cls), cls)
        if own and isinstance(obj, BaseModel) and self._classes.get(_key(cls)) is cls:
            fields = {name: getattr(obj, name) for name in cls.model_fields}
            fields.update(obj.__pydantic_extra__ or {})
            data: tuple[Any, ...] = (
                cls.__module__,
                cls.__name__,
                fields,
                None,
                sorted(obj.model_fields_set),
            )
            return ormsgpack.Ext(jsonplus.EXT_PYDANTIC_V2, self._pack(data))
        if dataclasses.is_dataclass(obj) and not isinstance(obj, SendProtocol):
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            data = (cls.__module__, cls.__name__, fields)
            return ormsgpack.Ext(jsonplus.EXT_CONSTRUCTOR_KW_ARGS, self._pack(data))
        if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
            data = (cls.__module__, cls.__name__, dict(obj._asdict()))
            return ormsgpack.Ext(jsonplus.EXT_CONSTRUCTOR_KW_ARGS, self._pack(data))
        return jsonplus._msgpack_default(obj)

    def _unpack(self, data: bytes) -> Any:
        return ormsgpack.unpackb(data, ext_hook=self._ext_hook, option=_UNPACK_OPTIONS)

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_TUPLE:
            return tuple(self._unpack(data))
        if code == jsonplus.EXT_DELTA_SNAPSHOT:
            return jsonplus._DeltaSnapshot(self._unpack(data))  # type: ignore[attr-defined]
        if code not in _CLASS_EXTS:
            return _LANGGRAPH_HOOK(code, data)
        record = self._unpack(data)
        module, name, args = record[0], record[1], record[2]
        cls = self._class(module, name)
        if cls is None:
            return args
        try:
            return _construct(cls, code, record)
        except Exception as exc:
            jsonplus.logger.warning(
                "could not rebuild %s.%s from a nervenet payload (%r); its fields travel on "
                "as a dict",
                module,
                name,
                exc,
            )
            return args

    def _class(self, module: str, name: str) -> Any:
        cls = self._classes.get((module, name))
        if cls is not None:
            return cls
        if (module, name) in lg_msgpack.SAFE_MSGPACK_TYPES:
            if (module, name) == ("langgraph.types", "Send"):
                return jsonplus._send_from_args
            return getattr(importlib.import_module(module), name)
        jsonplus.logger.warning(
            "refused to revive %s.%s from a nervenet payload: it is in none of the graph's "
            "schemas; pass it in distribute(..., allowed_types=[...]) to allow it",
            module,
            name,
        )
        return None


def _construct(cls: Any, code: int, record: list[Any]) -> Any:
    args = record[2]
    if cls is jsonplus._send_from_args:
        return cls(args)
    if code == jsonplus.EXT_CONSTRUCTOR_SINGLE_ARG:
        return cls(args)
    if code == jsonplus.EXT_CONSTRUCTOR_POS_ARGS:
        return cls(*args)
    if code == jsonplus.EXT_PYDANTIC_V2 and len(record) >= 5:
        return _model(cls, args, set(record[4]))
    try:
        return cls(**args)
    except Exception:
        if code == jsonplus.EXT_PYDANTIC_V2:
            return cls.model_construct(**args)
        if code == jsonplus.EXT_PYDANTIC_V1:
            return cls.construct(**args)
        raise


def _model(cls: type[BaseModel], values: dict[str, Any], fields_set: set[str]) -> BaseModel:
    """Rebuild a model as the node left it: no model validators run again.

    msgpack keeps the value but not the class of an ``int``/``str`` subclass (``ByteSize``): a
    field whose value is no longer an instance of its annotated class is validated against
    that annotation alone.
    """
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        value = values.get(name)
        if (
            name in values
            and isinstance(annotation, type)
            and value is not None
            and not _is_instance(value, annotation)
        ):
            with contextlib.suppress(Exception):
                values[name] = _adapter(annotation).validate_python(value)  # type: ignore[arg-type]
    return cls.model_construct(_fields_set=fields_set, **values)


def _is_instance(value: Any, annotation: type) -> bool:
    """``isinstance``, except for classes that refuse the check (a ``TypedDict``): the value
    then stays as it came, as a typed dict is a plain dict anyway."""
    try:
        return isinstance(value, annotation)
    except TypeError:
        return True


@functools.lru_cache(maxsize=256)
def _adapter(annotation: type) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


_LANGGRAPH_HOOK: Callable[[int, bytes], Any] = jsonplus._create_msgpack_ext_hook(None)


def strict_serializer(
    schemas: Iterable[Any] = (), allowed_types: Iterable[type] = ()
) -> StrictSerializer:
    """A serializer that revives only safe LangGraph types and the classes of ``schemas``."""
    allowed: set[type] = set(allowed_types)
    for schema in schemas:
        _collect(schema, allowed, depth=0)
    return StrictSerializer(sorted(allowed, key=lambda t: (t.__module__, t.__qualname__)))


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


def _key(cls: type) -> ClassKey:
    return (cls.__module__, cls.__name__)


def _revivable(cls: type) -> bool:
    return (
        (isinstance(cls, type) and issubclass(cls, BaseModel))
        or dataclasses.is_dataclass(cls)
        or (isinstance(cls, type) and issubclass(cls, enum.Enum))
        or (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields"))
        or (isinstance(cls, type) and callable(getattr(cls, "get_secret_value", None)))
    )


def _collect(tp: Any, found: set[type], depth: int, seen: set[int] | None = None) -> None:
    """Add to ``found`` the revivable classes reachable from type ``tp`` through type hints."""
    seen = set() if seen is None else seen
    if depth > _MAX_DEPTH or tp is None or id(tp) in seen:
        return
    seen.add(id(tp))  # each type once: schemas reach big shared graphs (pydantic_core's)
    origin = typing.get_origin(tp)
    if origin is not None:
        for arg in typing.get_args(tp):
            _collect(arg, found, depth + 1, seen)
        if isinstance(origin, type) and _revivable(origin):
            found.add(origin)
        return
    if not isinstance(tp, type):
        return
    if _revivable(tp):
        found.add(tp)
    # typing_extensions' check also knows typing_extensions.TypedDict (LangGraph's MessagesState)
    elif not typing_extensions.is_typeddict(tp):
        return
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except Exception:  # unresolved forward references: collect what the class itself gives
        hints = dict(getattr(tp, "__annotations__", {}))
    for hint in hints.values():
        _collect(hint, found, depth + 1, seen)
