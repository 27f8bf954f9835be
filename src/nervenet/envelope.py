"""The records that cross Redis: task envelopes and replies, as flat stream-entry fields.

Stream entries are already a binary-safe field map, so every field is stored as its own bytes value
and nothing needs a serializer that could revive objects: decoding is parsing a few ASCII numbers
and UTF-8 strings with bounds. Anything read from Redis is untrusted, so every decoder validates
and raises :class:`~nervenet.errors.EnvelopeError` with a short reason instead of crashing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from .errors import ConfigurationError, EnvelopeError

ENVELOPE_VERSION = b"1"
MAX_ID_LENGTH = 256
MAX_TASK_TYPE_LENGTH = 200
MAX_TRACE_LENGTH = 512
MAX_ATTEMPT = 1_000

Fields = Mapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class TaskEnvelope:
    """One unit of work on a task stream."""

    task_id: str
    """Identifies the work, not the delivery: a retried or resumed step reuses it, so the worker's
    result cache can answer it without running it again."""
    workflow_id: str
    """The workflow run (one graph run, one crew kickoff) the task belongs to."""
    task_type: str
    """Routing key: the stream it travels on and the handler that serves it."""
    attempt: int
    """1 for the first dispatch, +1 per coordinator retry; replies echo it."""
    deadline: float
    """Wall-clock epoch seconds after which nobody waits for the result (0 = no deadline)."""
    reply_to: str
    """Reply stream of the coordinator process waiting for the result."""
    payload: bytes
    """Handler input, opaque to the core."""
    trace: str = ""
    """W3C ``traceparent`` of the dispatching span, if tracing is on."""
    fresh: bool = False
    """No result can be cached for this task id yet: the coordinator made it up for this one
    dispatch, or its caller knows the step never ran before (``first_run``). When a worker reads
    attempt 1 for the first time, it skips the cache lookup. Deterministic ids of a step that a
    resumed run dispatches again are never fresh."""
    recorded: bool = False
    """The run keeps a record (:mod:`nervenet.runs`): the worker adds this task's attempt to
    its node history, in the pipeline that settles it."""

    def to_fields(self, signer: Signer | None = None) -> dict[bytes, bytes]:
        fields = {
            b"v": ENVELOPE_VERSION,
            b"id": self.task_id.encode(),
            b"wf": self.workflow_id.encode(),
            b"type": self.task_type.encode(),
            b"attempt": str(self.attempt).encode(),
            b"deadline": repr(self.deadline).encode(),
            b"reply": self.reply_to.encode(),
            b"trace": self.trace.encode(),
            b"payload": self.payload,
        }
        if self.fresh:
            fields[b"fresh"] = b"1"
        if self.recorded:
            fields[b"rec"] = b"1"
        if signer is not None:
            fields[b"sig"] = signer.sign(fields)
        return fields

    @classmethod
    def from_fields(
        cls,
        fields: Fields,
        *,
        max_payload_bytes: int,
        reply_prefix: str,
        signer: Signer | None = None,
    ) -> TaskEnvelope:
        if fields.get(b"v") != ENVELOPE_VERSION:
            raise EnvelopeError(f"unsupported envelope version {fields.get(b'v')!r:.40}")
        if signer is not None:
            signer.verify(fields)
        payload = _required(fields, b"payload")
        if len(payload) > max_payload_bytes:
            raise EnvelopeError(
                f"payload of {len(payload)} bytes exceeds the limit of {max_payload_bytes}"
            )
        reply_to = _text(fields, b"reply", MAX_ID_LENGTH + 64)
        if not reply_to.startswith(reply_prefix):
            raise EnvelopeError(f"reply address {reply_to!r:.80} is outside this namespace")
        return cls(
            task_id=_identifier(fields, b"id"),
            workflow_id=_identifier(fields, b"wf"),
            task_type=_text(fields, b"type", MAX_TASK_TYPE_LENGTH),
            attempt=_integer(fields, b"attempt", 1, MAX_ATTEMPT),
            deadline=_deadline(fields),
            reply_to=reply_to,
            payload=payload,
            trace=_text(fields, b"trace", MAX_TRACE_LENGTH, allow_empty=True),
            fresh=fields.get(b"fresh") == b"1",  # anything else: look the cache up, to be safe
            recorded=fields.get(b"rec") == b"1",
        )


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A coordinator no longer wants one published task entry done (its dispatch was cancelled).

    Travels on the task type's cancel stream, which every worker of the type reads; only the
    worker holding the entry acts on it. Cancellations are not signed even with signing on:
    whoever can write to the cancel stream can also ``XDEL`` the task entry itself.
    """

    entry_id: str
    """Id of the task's entry on its task stream (what ``XADD`` returned to the coordinator).
    Unique per publish, unlike the task id, which a resumed workflow dispatches again."""
    task_id: str
    """The task, for logs."""
    attempt: int
    """The attempt, for logs."""

    def to_fields(self) -> dict[bytes, bytes]:
        return {
            b"entry": self.entry_id.encode(),
            b"id": self.task_id.encode(),
            b"attempt": str(self.attempt).encode(),
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> CancelRequest:
        entry_id = _text(fields, b"entry", 41)
        ms, dash, seq = entry_id.partition("-")
        if not (dash and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
            raise EnvelopeError(f"field 'entry' = {entry_id!r:.60} is not a stream entry id")
        return cls(
            entry_id=entry_id,
            task_id=_identifier(fields, b"id"),
            attempt=_integer(fields, b"attempt", 1, MAX_ATTEMPT),
        )


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """Just enough of a task entry to answer it, read from an entry that failed validation."""

    reply_to: str
    """Reply stream of the coordinator that (apparently) sent the entry."""
    task_id: str
    """The task the answer is for."""
    attempt: int
    """The attempt the answer is for."""

    @classmethod
    def from_fields(cls, fields: Fields, *, is_reply_stream: Callable[[str], bool]) -> ReplyRoute:
        reply_to = _text(fields, b"reply", MAX_ID_LENGTH + 64)
        if not is_reply_stream(reply_to):
            raise EnvelopeError(f"{reply_to!r:.80} is not a reply stream of this namespace")
        return cls(
            reply_to=reply_to,
            task_id=_identifier(fields, b"id"),
            attempt=_integer(fields, b"attempt", 1, MAX_ATTEMPT),
        )


class ReplyKind(Enum):
    RESULT = b"ok"
    ERROR = b"error"
    FRAME = b"frame"
    CANCELLED = b"cancelled"
    """The handler of a withdrawn task has stopped (its ``except``/``finally`` blocks ran)."""


@dataclass(frozen=True, slots=True)
class ReplyError:
    """An exception raised by a handler, as text: nothing on the way back can execute code."""

    type_name: str
    """Qualified name of the exception class, e.g. ``builtins.ValueError``."""
    message: str
    """``str(exc)``."""
    traceback: str
    """The worker-side formatted traceback."""
    data: bytes = b""
    """Optional adapter-defined bytes to rebuild the exception faithfully (may be empty)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What a worker sends back on a coordinator's reply stream."""

    task_id: str
    """Correlates the reply with the waiting dispatch."""
    attempt: int
    """Which attempt produced it, so a late error of an old attempt is not taken for a new one."""
    kind: ReplyKind
    """A final result, a final error, or an intermediate frame (streamed output)."""
    body: bytes = b""
    """Result bytes (RESULT) or frame bytes (FRAME)."""
    error: ReplyError | None = field(default=None)
    """Set for ERROR replies."""

    def to_fields(self, signer: Signer | None = None) -> dict[bytes, bytes]:
        fields = {
            b"id": self.task_id.encode(),
            b"attempt": str(self.attempt).encode(),
            b"kind": self.kind.value,
            b"body": self.body,
        }
        if self.error is not None:
            fields[b"etype"] = self.error.type_name.encode()
            fields[b"emsg"] = self.error.message.encode()
            fields[b"etb"] = self.error.traceback.encode()
            fields[b"edata"] = self.error.data
        if signer is not None:
            fields[b"sig"] = signer.sign(fields)
        return fields

    @classmethod
    def from_fields(cls, fields: Fields, *, signer: Signer | None = None) -> Reply:
        if signer is not None:
            signer.verify(fields, "reply")
        try:
            kind = ReplyKind(fields.get(b"kind"))
        except ValueError:
            raise EnvelopeError(f"unknown reply kind {fields.get(b'kind')!r:.40}") from None
        error = None
        if kind is ReplyKind.ERROR:
            error = ReplyError(
                type_name=_text(fields, b"etype", 300),
                message=_decode(fields.get(b"emsg", b""), b"emsg"),
                traceback=_decode(fields.get(b"etb", b""), b"etb"),
                data=fields.get(b"edata", b""),
            )
        return cls(
            task_id=_identifier(fields, b"id"),
            attempt=_integer(fields, b"attempt", 1, MAX_ATTEMPT),
            kind=kind,
            body=fields.get(b"body", b""),
            error=error,
        )


class Signer:
    """HMAC-SHA256 over an envelope's or a reply's fields with a shared secret.

    With signing on, write access to Redis is no longer enough to make a worker run something
    (it refuses unsigned or altered envelopes) nor to answer a dispatch (its coordinator refuses
    unsigned or altered replies, and a worker treats an unsealed cached result as absent).
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigurationError(
                f"the signing secret is {len(secret)} bytes; use at least 16, e.g. "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        self._secret = secret

    def sign(self, fields: Fields) -> bytes:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        for name in sorted(k for k in fields if k != b"sig"):
            value = fields[name]
            mac.update(len(name).to_bytes(4, "big") + name)
            mac.update(len(value).to_bytes(8, "big") + value)
        return mac.hexdigest().encode()

    def verify(self, fields: Fields, what: str = "envelope") -> None:
        signature = fields.get(b"sig")
        if signature is None:
            raise EnvelopeError(f"unsigned {what} (signing is required)")
        if not hmac.compare_digest(signature, self.sign(fields)):
            raise EnvelopeError(f"bad {what} signature")

    def seal(self, task_id: str, result: bytes) -> bytes:
        """A cached result as stored: its MAC (bound to the task id), then the bytes."""
        return self._result_mac(task_id, result) + result

    def unseal(self, task_id: str, sealed: bytes) -> bytes | None:
        """The result bytes of a sealed cache entry, or ``None`` if it was not sealed by us for
        this task id (then it is treated as absent: the task runs)."""
        mac, result = sealed[:_SEAL_LENGTH], sealed[_SEAL_LENGTH:]
        if len(mac) == _SEAL_LENGTH and hmac.compare_digest(mac, self._result_mac(task_id, result)):
            return result
        return None

    def _result_mac(self, task_id: str, result: bytes) -> bytes:
        return self.sign({b"result-of": task_id.encode(), b"result": result})


_SEAL_LENGTH = 64  # hex SHA-256


def cached_result(signer: Signer | None, task_id: str, stored: bytes) -> bytes | None:
    """A result-cache entry as the result it stands for: as stored without signing; with it,
    only if the entry was sealed for this task id (else ``None``: it counts as absent)."""
    return stored if signer is None else signer.unseal(task_id, stored)


def _required(fields: Fields, name: bytes) -> bytes:
    value = fields.get(name)
    if value is None:
        raise EnvelopeError(f"missing field {name.decode()!r}")
    if not isinstance(value, bytes):  # defensive: clients configured to decode responses
        raise EnvelopeError(f"field {name.decode()!r} is not bytes")
    return value


def _decode(raw: bytes, name: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise EnvelopeError(f"field {name.decode()!r} is not UTF-8") from None


def _text(fields: Fields, name: bytes, max_length: int, *, allow_empty: bool = False) -> str:
    raw = _required(fields, name)
    if len(raw) > max_length:
        raise EnvelopeError(f"field {name.decode()!r} longer than {max_length} bytes")
    if not raw and not allow_empty:
        raise EnvelopeError(f"field {name.decode()!r} is empty")
    return _decode(raw, name)


def _identifier(fields: Fields, name: bytes) -> str:
    text = _text(fields, name, MAX_ID_LENGTH)
    if not text.isprintable():
        raise EnvelopeError(f"field {name.decode()!r} has non-printable characters")
    return text


def _integer(fields: Fields, name: bytes, low: int, high: int) -> int:
    raw = _text(fields, name, 12)
    if not (raw.isascii() and raw.isdigit()):  # str.isdigit() also accepts "²" and "٣"
        raise EnvelopeError(f"field {name.decode()!r} is not a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise EnvelopeError(f"field {name.decode()!r} = {value} outside {low}..{high}")
    return value


def _deadline(fields: Fields) -> float:
    raw = _text(fields, b"deadline", 32)
    if not raw.isascii():  # float() would read non-ASCII digits too
        raise EnvelopeError("field 'deadline' is not a number")
    try:
        value = float(raw)
    except ValueError:
        raise EnvelopeError("field 'deadline' is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise EnvelopeError("field 'deadline' must be a finite, non-negative number")
    return value
