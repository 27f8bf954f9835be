"""Payload bytes made readable for an operator (``escalations show``, the dashboard).

The core does not know what a payload holds: adapters frame theirs as ``<tag> NUL <data>``
(LangGraph's serializer: ``msgpack``, ``json``, ``bytes``, ``null``), plain handlers send JSON or
anything. This tries, in order, an adapter frame, JSON, UTF-8 text, and falls back to an
abbreviated hex dump. MessagePack is decoded only if ``ormsgpack`` (LangGraph's) is installed;
extension values (LangGraph's encoded objects) are shown as their own decoded contents, never
rebuilt into objects. Everything here reads untrusted bytes: no code runs, output is bounded.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Characters a description is cut to.
MAX_DESCRIPTION = 20_000
_FRAME_TAGS = (b"msgpack", b"json", b"bytes", b"null")


def describe_payload(raw: bytes, *, limit: int = MAX_DESCRIPTION) -> str:
    """A readable, bounded rendering of ``raw``."""
    text = _describe(raw)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more chars)"


def _describe(raw: bytes) -> str:
    tag, separator, data = raw.partition(b"\0")
    if separator and tag in _FRAME_TAGS:
        if tag == b"null":
            return "null"
        if tag == b"bytes":
            return f"{len(data)} bytes: {_hex(data)}"
        if tag == b"msgpack":
            decoded = _unpack_msgpack(data)
            if decoded is not None:
                return _pretty(decoded)
        raw = data
    try:
        return _pretty(orjson.loads(raw))
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return f"{len(raw)} bytes: {_hex(raw)}"
    return text if text.isprintable() or "\n" in text else repr(text)


def _unpack_msgpack(data: bytes) -> Any | None:
    try:
        import ormsgpack
    except ImportError:
        return None

    def ext(code: int, inner: bytes) -> Any:
        try:
            return {"__ext__": code, "value": ormsgpack.unpackb(inner, ext_hook=ext)}
        except (ormsgpack.MsgpackDecodeError, ValueError, TypeError):
            return {"__ext__": code, "bytes": _hex(inner)}

    try:
        return ormsgpack.unpackb(data, ext_hook=ext)
    except (ormsgpack.MsgpackDecodeError, ValueError, TypeError):
        return None


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=_fallback)


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes):
        return _hex(value)
    return repr(value)[:200]


def _hex(data: bytes, shown: int = 64) -> str:
    return data[:shown].hex(" ") + (" ..." if len(data) > shown else "")
