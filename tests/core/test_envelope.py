"""Envelopes and replies: what crosses Redis round-trips exactly, and anything else is refused
with an EnvelopeError (never another exception), because every stream entry is untrusted input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nervenet import EnvelopeError
from nervenet.envelope import CancelRequest, Reply, ReplyError, ReplyKind, Signer, TaskEnvelope
from nervenet.keys import Keys

KEYS = Keys()
PREFIX = KEYS.reply_stream_prefix
LIMIT = 1024
SECRET = b"0123456789abcdef-secret"

field_names = st.sampled_from(
    [b"v", b"id", b"wf", b"type", b"attempt", b"deadline", b"reply", b"trace", b"payload",
     b"sig", b"kind", b"body", b"etype", b"emsg", b"etb", b"edata"]
) | st.binary(max_size=12)  # fmt: skip
field_values = st.binary(max_size=64) | st.sampled_from(
    [b"1", b"0", b"-1", b"1000", b"1001", b"nan", b"inf", b"-0.0", b"1e400", b"\xc2\xb2",
     b"\xd9\xa3", b"1_0", b" 1", b"ok", b"error", b"frame", b"nn:reply:{x}", b"\xff\xfe"]
)  # fmt: skip
arbitrary_fields = st.dictionaries(field_names, field_values, max_size=16)

identifiers = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn")),
    min_size=1,
    max_size=40,
).filter(lambda s: s.isprintable() and len(s.encode()) <= 256)
valid_envelopes = st.builds(
    TaskEnvelope,
    task_id=identifiers,
    workflow_id=identifiers,
    task_type=st.from_regex(r"[a-z][a-z0-9_/.-]{0,30}", fullmatch=True),
    attempt=st.integers(1, 1000),
    deadline=st.one_of(st.just(0.0), st.floats(0, 4e9, allow_nan=False)),
    reply_to=identifiers.map(lambda s: f"{PREFIX}{s}}}"),
    payload=st.binary(max_size=LIMIT),
    trace=st.text(max_size=60).filter(lambda s: len(s.encode()) <= 512),
    fresh=st.booleans(),
)


def parse(fields: dict[bytes, bytes], signer: Signer | None = None) -> TaskEnvelope:
    return TaskEnvelope.from_fields(
        fields, max_payload_bytes=LIMIT, reply_prefix=PREFIX, signer=signer
    )


def valid_fields() -> dict[bytes, bytes]:
    envelope = TaskEnvelope(
        task_id="t-1",
        workflow_id="wf-1",
        task_type="core/echo",
        attempt=1,
        deadline=0.0,
        reply_to=f"{PREFIX}abc}}",
        payload=b"{}",
    )
    return envelope.to_fields()


@given(valid_envelopes)
def test_a_task_envelope_survives_the_round_trip_through_stream_fields(
    envelope: TaskEnvelope,
) -> None:
    assert parse(envelope.to_fields()) == envelope


@given(valid_envelopes)
def test_a_signed_envelope_verifies_with_the_same_secret(envelope: TaskEnvelope) -> None:
    signer = Signer(SECRET)
    assert parse(envelope.to_fields(signer), signer) == envelope


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(arbitrary_fields)
def test_arbitrary_fields_fail_only_with_envelope_error(fields: dict[bytes, bytes]) -> None:
    try:
        parse(fields)
    except EnvelopeError as exc:
        assert exc.reason
    # A valid envelope out of random bytes is fine too; any other exception fails the test.


@settings(max_examples=500)
@given(
    st.sampled_from(sorted(valid_fields())),
    field_values | st.binary(min_size=LIMIT + 1, max_size=LIMIT + 2),
)
@example(b"attempt", "\u00b2".encode())
def test_a_valid_envelope_with_one_field_replaced_fails_only_with_envelope_error(
    name: bytes, value: bytes
) -> None:
    fields = valid_fields()
    fields[name] = value
    try:
        parse(fields)
    except EnvelopeError as exc:
        assert exc.reason


@settings(max_examples=300)
@given(st.sampled_from(sorted(valid_fields())))
def test_a_valid_envelope_with_one_field_missing_is_refused(name: bytes) -> None:
    fields = valid_fields()
    del fields[name]
    with pytest.raises(EnvelopeError):
        parse(fields)


@settings(max_examples=200)
@given(arbitrary_fields)
def test_arbitrary_fields_fail_signature_checks_only_with_envelope_error(
    fields: dict[bytes, bytes],
) -> None:
    fields = {**valid_fields(), **fields}
    with pytest.raises(EnvelopeError):
        parse(fields, Signer(SECRET))


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        (b"v", b"2", "unsupported envelope version"),
        (b"attempt", b"0", "outside 1..1000"),
        (b"attempt", b"abc", "not a whole number"),
        pytest.param(
            b"attempt",
            "\u00b2".encode(),
            "not a whole number",
        ),
        pytest.param(
            b"attempt",
            "\u0663".encode(),
            "not a whole number",
        ),
        (b"deadline", b"nan", "finite"),
        (b"deadline", b"soon", "not a number"),
        (b"id", b"\xff", "not UTF-8"),
        (b"id", b"a\nb", "non-printable"),
        (b"reply", b"nn:task:{core/echo}", "outside this namespace"),
        (b"payload", b"x" * (LIMIT + 1), "exceeds the limit"),
    ],
)
def test_each_invalid_field_is_refused_with_a_reason(
    name: bytes, value: bytes, reason: str
) -> None:
    fields = valid_fields()
    fields[name] = value
    with pytest.raises(EnvelopeError, match=reason):
        parse(fields)


def test_a_tampered_envelope_fails_its_signature() -> None:
    signer = Signer(SECRET)
    fields = valid_fields()
    signed = {**fields, b"sig": signer.sign(fields), b"payload": b'{"evil": 1}'}
    with pytest.raises(EnvelopeError, match="bad envelope signature"):
        parse(signed, signer)


def test_an_unsigned_envelope_is_refused_when_signing_is_on() -> None:
    with pytest.raises(EnvelopeError, match="unsigned envelope"):
        parse(valid_fields(), Signer(SECRET))


def test_an_envelope_signed_with_another_secret_is_refused() -> None:
    fields = valid_fields()
    fields[b"sig"] = Signer(b"another-secret-of-16-bytes").sign(fields)
    with pytest.raises(EnvelopeError, match="bad envelope signature"):
        parse(fields, Signer(SECRET))


replies = st.builds(
    Reply,
    task_id=identifiers,
    attempt=st.integers(1, 1000),
    kind=st.sampled_from([ReplyKind.RESULT, ReplyKind.FRAME]),
    body=st.binary(max_size=64),
) | st.builds(
    Reply,
    task_id=identifiers,
    attempt=st.integers(1, 1000),
    kind=st.just(ReplyKind.ERROR),
    error=st.builds(
        ReplyError,
        type_name=st.text(min_size=1, max_size=50).filter(lambda s: len(s.encode()) <= 300),
        message=st.text(max_size=80),
        traceback=st.text(max_size=80),
        data=st.binary(max_size=32),
    ),
)


@given(replies)
def test_a_reply_survives_the_round_trip_through_stream_fields(reply: Reply) -> None:
    assert Reply.from_fields(reply.to_fields()) == reply


@settings(max_examples=500)
@given(arbitrary_fields)
def test_arbitrary_reply_fields_fail_only_with_envelope_error(fields: dict[bytes, bytes]) -> None:
    try:
        Reply.from_fields(fields)
    except EnvelopeError as exc:
        assert exc.reason


@settings(max_examples=300)
@given(replies, st.sampled_from([b"id", b"attempt", b"kind", b"etype", b"emsg", b"etb"]),
       field_values)  # fmt: skip
@example(Reply("t-1", 1, ReplyKind.RESULT), b"attempt", "\u00b2".encode())
def test_a_reply_with_one_field_replaced_fails_only_with_envelope_error(
    reply: Reply, name: bytes, value: bytes
) -> None:
    fields = reply.to_fields()
    fields[name] = value
    try:
        Reply.from_fields(fields)
    except EnvelopeError as exc:
        assert exc.reason


cancel_requests = st.builds(
    CancelRequest,
    entry_id=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)).map(
        lambda t: f"{t[0]}-{t[1]}"
    ),
    task_id=identifiers,
    attempt=st.integers(1, 1000),
)


@given(cancel_requests)
def test_a_cancel_request_survives_the_round_trip_through_stream_fields(
    request: CancelRequest,
) -> None:
    assert CancelRequest.from_fields(request.to_fields()) == request


@given(st.dictionaries(st.sampled_from([b"entry", b"id", b"attempt", b"x"]), st.binary()))
def test_arbitrary_cancel_fields_fail_only_with_envelope_error(fields: dict[bytes, bytes]) -> None:
    try:
        CancelRequest.from_fields(fields)
    except EnvelopeError as exc:
        assert exc.reason


NOT_ENTRY_IDS = [b"", b"12", b"-1", b"1-", b"1-2-3", "\u0661-1".encode(), b"1 - 2"]


@pytest.mark.parametrize("entry", NOT_ENTRY_IDS)
def test_a_cancel_request_for_something_that_is_no_entry_id_is_refused(entry: bytes) -> None:
    fields = CancelRequest("1-1", "t", 1).to_fields()
    with pytest.raises(EnvelopeError):
        CancelRequest.from_fields({**fields, b"entry": entry})
