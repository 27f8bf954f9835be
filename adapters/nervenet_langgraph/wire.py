"""What a node task carries over Redis, both ways, and how exceptions survive the trip.

Payloads, outcomes and stream frames are LangGraph-serialized values (strict serializer) wrapped
as ``type-tag NUL bytes``. Exceptions come back as their qualified type name plus arguments; the
coordinator rebuilds the original type only if that class is *already loaded* in its process (it
never imports anything a payload names), so ``RetryPolicy.retry_on`` sees the type it expects.
"""

from __future__ import annotations

import sys
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from pydantic_core import ValidationError

from nervenet import RemoteTaskError

_SEPARATOR = b"\0"
# First argument of a pydantic ValidationError's wire form: it cannot be rebuilt from its args.
_VALIDATION_ERROR = "__pydantic_validation_error__"


def pack(serde: SerializerProtocol, value: Any) -> bytes:
    type_tag, data = serde.dumps_typed(value)
    return type_tag.encode() + _SEPARATOR + data


def unpack(serde: SerializerProtocol, raw: bytes) -> Any:
    type_tag, separator, data = raw.partition(_SEPARATOR)
    if not separator or type_tag not in (b"msgpack", b"null", b"bytes", b"json"):
        raise ValueError(f"not a nervenet LangGraph frame (tag {type_tag[:20]!r})")
    return serde.loads_typed((type_tag.decode(), data))


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_args(serde: SerializerProtocol, exc: BaseException) -> list[Any]:
    """Arguments to rebuild ``exc`` with, falling back to its text when they don't serialize."""
    if isinstance(exc, ValidationError):
        return [_VALIDATION_ERROR, exc.title, _validation_errors(exc)]
    args = list(exc.args)
    try:
        serde.dumps_typed(args)
    except Exception:
        return [str(exc)]
    return args


def revive_exception(type_name: str, args: list[Any], remote_traceback: str) -> BaseException:
    """Rebuild a worker's exception as its own type when that type is loaded here."""
    cls = _loaded_exception_class(type_name)
    exc: BaseException | None = None
    if args and args[0] == _VALIDATION_ERROR:
        exc = _validation_error(args)
    elif cls is not None:
        try:
            exc = cls(*args)
        except Exception:
            try:
                exc = cls.__new__(cls)
                exc.args = tuple(args)
            except Exception:
                exc = None
    if exc is None:
        exc = RemoteTaskError(
            task_id="?",
            task_type="?",
            error_type=type_name,
            error_message=str(args[0]) if args else "",
            traceback=remote_traceback,
        )
    if remote_traceback:
        exc.add_note(f"Raised on a nervenet worker:\n{remote_traceback}")
    return exc


def _loaded_exception_class(type_name: str) -> type[BaseException] | None:
    module_name, _, qualname = type_name.rpartition(".")
    # Try successively shorter module paths: nested classes have dots in their qualname.
    while module_name:
        module = sys.modules.get(module_name)
        if module is not None:
            obj: Any = module
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if isinstance(obj, type) and issubclass(obj, BaseException):
                return obj
            return None
        module_name, _, head = module_name.rpartition(".")
        qualname = f"{head}.{qualname}"
    return None


def _validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = {"type": error["type"], "loc": list(error["loc"])}
        item["input"] = error.get("input")
        if error.get("ctx"):
            item["ctx"] = {k: v if _plain(v) else str(v) for k, v in error["ctx"].items()}
        errors.append(item)
    return errors


def _validation_error(args: list[Any]) -> BaseException | None:
    try:
        line_errors = [{**e, "loc": tuple(e["loc"])} for e in args[2]]
        return ValidationError.from_exception_data(args[1], line_errors)  # type: ignore[arg-type]
    except Exception:
        return None


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
